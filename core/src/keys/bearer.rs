//! Step 2 for one request: the bearer token from `Authorization`, checked offline.

use std::rc::Rc;

use super::claims::Claims;
use super::error::KeyError;
use super::shard::ShardVerifier;

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110 §11.1); surrounding spaces are ignored.
pub fn bearer_token(authorization: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks the request's bearer token on this shard; `Ok(None)` when the gateway
/// runs without keys (`--no-auth`).
pub async fn authenticate(
    verifier: Option<&ShardVerifier>,
    authorization: Option<&[u8]>,
) -> Result<Option<Rc<Claims>>, KeyError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    let token = authorization.and_then(bearer_token).ok_or(KeyError::Missing)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(Some(verifier.verify(token, now).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"BEARER   abc  "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"abc"), None);
        assert_eq!(bearer_token(b"Bearer \xff"), None);
    }
}
