//! Where a pool connects to: scheme, host, port and the path prefix of a provider's base URL.

use super::error::UpstreamError;

/// Longest host name accepted (DNS limit).
const HOST_BYTES_MAX: usize = 253;
/// Longest path prefix accepted; base URLs are short, anything longer is a config mistake.
const PATH_PREFIX_BYTES_MAX: usize = 1024;

/// One upstream origin, parsed from a provider base URL such as `https://api.openai.com/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `true` for `https://` (TLS), `false` for `http://`.
    pub https: bool,
    /// Host name or IP literal, without brackets for IPv6 (`::1`, not `[::1]`).
    pub host: String,
    /// TCP port; the scheme's default (443 / 80) when the URL names none.
    pub port: u16,
    /// Path prepended to every request path, without a trailing slash (`/v1`, or empty).
    pub path_prefix: String,
}

impl Origin {
    /// Parses `http[s]://host[:port][/path]`. Rejects user info, queries, fragments, empty hosts,
    /// bad ports and bytes that could break a request line.
    pub fn parse(url: &str) -> Result<Origin, UpstreamError> {
        let url = url.trim();
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(UpstreamError::InvalidUrl("scheme must be http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(UpstreamError::InvalidUrl("query and fragment are not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UpstreamError::InvalidUrl("user info is not allowed"));
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(port) => port,
            None if https => 443,
            None => 80,
        };
        let path_prefix = path.trim_end_matches('/');
        if path_prefix.len() > PATH_PREFIX_BYTES_MAX {
            return Err(UpstreamError::InvalidUrl("path is too long"));
        }
        if !path_prefix.bytes().all(is_path_byte) {
            return Err(UpstreamError::InvalidUrl("path has bytes not allowed in a URL"));
        }
        Ok(Origin { https, host: host.to_ascii_lowercase(), port, path_prefix: path_prefix.to_owned() })
    }

    /// True when the fields (public, so possibly set by hand) are what [`Origin::parse`] would
    /// produce: a host and path prefix that cannot break the request line or `Host` header.
    pub fn is_well_formed(&self) -> bool {
        let host_ok = if self.host.contains(':') {
            self.host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !self.host.is_empty() && self.host.len() <= HOST_BYTES_MAX && self.host.bytes().all(is_host_byte)
        };
        let prefix_ok = self.path_prefix.len() <= PATH_PREFIX_BYTES_MAX
            && (self.path_prefix.is_empty() || self.path_prefix.starts_with('/'))
            && self.path_prefix.bytes().all(is_path_byte);
        host_ok && prefix_ok && self.port != 0
    }

    /// The `Host` header value: the host (bracketed if IPv6) plus `:port` unless it is the
    /// scheme's default.
    pub fn authority(&self) -> String {
        let default_port = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UpstreamError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: `[addr]` or `[addr]:port`.
        let (addr, after) = rest.split_once(']').ok_or(UpstreamError::InvalidUrl("unclosed '[' in host"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UpstreamError::InvalidUrl("bad IPv6 literal"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UpstreamError::InvalidUrl("junk after IPv6 literal"))?),
        };
        (addr, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UpstreamError::InvalidUrl("empty host"));
    }
    if host.len() > HOST_BYTES_MAX {
        return Err(UpstreamError::InvalidUrl("host is too long"));
    }
    let is_ipv6 = host.contains(':');
    if !is_ipv6 && !host.bytes().all(is_host_byte) {
        return Err(UpstreamError::InvalidUrl("host has bytes not allowed in a host name"));
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(UpstreamError::InvalidUrl("bad port")),
            Ok(port) => Some(port),
        },
        Some(_) => return Err(UpstreamError::InvalidUrl("bad port")),
    };
    Ok((host, port))
}

/// Bytes allowed in a registered host name (letters, digits, '-', '.', '_').
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// Bytes allowed in a path: RFC 3986 unreserved, sub-delims, ':', '@', '/', '%'.
/// No space, CR, LF or other controls, so the path can never break the request line.
pub(crate) fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_provider_urls() {
        let o = Origin::parse("https://api.openai.com/v1").unwrap();
        assert_eq!(o, Origin { https: true, host: "api.openai.com".into(), port: 443, path_prefix: "/v1".into() });
        assert_eq!(o.authority(), "api.openai.com");
        let o = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!((o.https, o.port, o.path_prefix.as_str()), (false, 8080, ""));
        assert_eq!(o.authority(), "127.0.0.1:8080");
        let o = Origin::parse("HTTPS://[::1]:8443/openai/v1/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 8443));
        assert_eq!(o.path_prefix, "/openai/v1");
        assert_eq!(o.authority(), "[::1]:8443");
        assert_eq!(Origin::parse("https://[::1]").unwrap().authority(), "[::1]");
        assert!(o.is_well_formed());
        let mut bad = o.clone();
        bad.host = "a\r\nX: y".into();
        assert!(!bad.is_well_formed());
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://:80",
            "https://a:0",
            "https://a:65536",
            "https://a:x",
            "https://u@a",
            "https://a/?q",
            "https://a/#f",
            "https://a/b c",
            "https://a/b\r\nX: y",
            "https://[::1",
            "https://[zz]:1",
            "https://a b",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
