//! The two credit endpoints: `GET /v1/credits/params` (public, what a client needs to
//! build requests and check credentials) and `POST /v1/credits/issue` (bearer key with
//! the `zk` claim; one credential per key per epoch).

use gatekeeper_net::{Request, Responder};

use super::error::{CreditError, CHANGE_HEADER, CHANGE_SSE_PREFIX};
use super::store::Credits;
use crate::error::GatewayError;
use crate::respond::send_error;

/// Largest `POST /v1/credits/issue` body: `{"request": "<~200 base64url chars>"}`.
pub const ISSUE_BODY_BYTES_MAX: usize = 1_024;

/// `GET /v1/credits/params`.
pub async fn params(credits: Option<&Credits>, request_id: &str, res: &mut Responder<'_>) -> u16 {
    let Some(c) = credits else {
        return send_error(res, request_id, &GatewayError::Credit(CreditError::NotAccepted)).await;
    };
    let len = c.epoch_length();
    let epoch =
        len.epoch_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let next = epoch.saturating_add(1);
    let body = serde_json::json!({
        "version": gatekeeper_zk::wire::WIRE_VERSION,
        "suite": "ACT-Ristretto255-BLAKE3",
        "deployment": c.domain().name(),
        "params_version": gatekeeper_zk::PARAMS_VERSION,
        "balance_bits": gatekeeper_zk::BALANCE_BITS,
        "credits_max": gatekeeper_zk::CREDITS_MAX,
        "tokens_per_credit": c.tokens_per_credit(),
        "max_tokens_default": c.max_tokens_default(),
        "epoch_seconds": len.seconds(),
        "epoch": epoch,
        "public_key": c.public_key(epoch).encode(),
        "next_epoch": next,
        "next_epoch_starts_unix_s": len.start_s(next),
        "next_public_key": c.public_key(next).encode(),
        "spend_header": "X-Gatekeeper-Credit",
        "change_header": CHANGE_HEADER,
        "change_sse_prefix": CHANGE_SSE_PREFIX,
    });
    let _ = res
        .send(
            200,
            &[("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())],
            body.to_string().as_bytes(),
        )
        .await;
    200
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    request: String,
}

/// `POST /v1/credits/issue`: `{"request": "<IssuanceRequest>"}` →
/// `{"epoch", "credits", "response": "<IssuanceResponse>"}`. `audit(epoch, credits)`
/// writes the issuance's audit record before the answer; `false` (not written) answers
/// 503 `audit_unavailable` (the credential is kept: the same request gets it again).
pub async fn issue(
    credits: Option<&Credits>,
    claims: Option<&crate::keys::Claims>,
    req: &Request,
    request_id: &str,
    res: &mut Responder<'_>,
    audit: impl FnOnce(u32, u64) -> bool,
) -> u16 {
    let answer = async {
        let c = credits.ok_or(CreditError::NotAccepted)?;
        let claims = match claims {
            Some(claims) if claims.zk => claims,
            _ => return Err(CreditError::NotZkKey),
        };
        if req.body.len() > ISSUE_BODY_BYTES_MAX {
            return Err(CreditError::BadIssuanceRequest("body larger than 1024 bytes"));
        }
        let body: IssueBody = serde_json::from_slice(&req.body)
            .map_err(|_| CreditError::BadIssuanceRequest("body must be {\"request\": \"<base64url>\"}"))?;
        let allowance = c.allowance(claims);
        let credits_n = allowance.credits;
        let response = c.issue(&claims.jti, allowance, &body.request).await?;
        let epoch = gatekeeper_zk::IssuanceResponse::decode(&response).map(|r| r.epoch()).unwrap_or(0);
        Ok::<_, CreditError>((epoch, credits_n, response))
    }
    .await;
    match answer {
        Ok((epoch, credits_n, response)) => {
            if !audit(epoch, credits_n) {
                return send_error(res, request_id, &GatewayError::AuditUnavailable).await;
            }
            let json = serde_json::json!({ "epoch": epoch, "credits": credits_n, "response": response });
            let _ = res
                .send(
                    200,
                    &[("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())],
                    json.to_string().as_bytes(),
                )
                .await;
            200
        }
        Err(e) => send_error(res, request_id, &GatewayError::Credit(e)).await,
    }
}
