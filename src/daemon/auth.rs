//! The daemon's bearer token (or a proof of it, proof.rs) and the Host/Origin guard against DNS rebinding.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::proof::{self, Challenges};

/// Reads the token file.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Reads the token, creating a random one (mode 0600) at first start.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    if let Ok(token) = read_token(path)
        && !token.is_empty()
    {
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    Ok(token)
}

/// What the token check needs.
pub struct TokenCheck {
    pub token: String,
    pub token_path: String,
    /// Nonces handed out to shims that prove the token instead of sending it (proof.rs).
    pub challenges: Challenges,
}

/// Equal-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Admits requests with the right `Authorization: Bearer` token, or a proof of it (`Exai-Proof`).
pub async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(fields) = proof::parse(authorization) {
        return answer_proof(&check, fields, request, next).await;
    }
    match authorization.strip_prefix("Bearer ") {
        Some(token) if same(token.trim().as_bytes(), check.token.as_bytes()) => {
            next.run(request).await
        }
        _ => unauthorized(&check, request.uri().path(), "missing or wrong token"),
    }
}

fn unauthorized(check: &TokenCheck, path: &str, what: &str) -> Response {
    tracing::warn!(%path, "request without a valid token refused: {what}");
    unauthorized_answer(check, what)
}

/// The 401 itself; also step 1 of the challenge–response, which is no refusal worth a warning.
fn unauthorized_answer(check: &TokenCheck, what: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        format!(
            "{what}: exai's token is in {}; send it as 'Authorization: Bearer <token>'\n",
            check.token_path
        ),
    )
        .into_response()
}

/// Step 1 of the challenge–response gets a challenge; step 2 is admitted with the daemon's own proof.
async fn answer_proof(
    check: &TokenCheck,
    fields: proof::ProofFields,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let Some(client_nonce) = fields.client_nonce.filter(|n| proof::is_nonce(n)) else {
        return unauthorized(check, &path, "Exai-Proof without a valid client nonce (cn)");
    };
    match (fields.server_nonce, fields.mac) {
        (Some(server_nonce), Some(mac)) => {
            // Redeemed first, so a wrong guess still burns the nonce.
            if !(check.challenges.redeem(&server_nonce)
                && proof::shim_proof_holds(&check.token, &server_nonce, &client_nonce, &mac))
            {
                return unauthorized(
                    check,
                    &path,
                    "Exai-Proof refused (not made with this daemon's token, or its challenge was used or expired)",
                );
            }
            let answer = proof::daemon_proof(&check.token, &server_nonce, &client_nonce);
            let mut response = next.run(request).await;
            if let Ok(value) = HeaderValue::from_str(&answer) {
                response
                    .headers_mut()
                    .insert(proof::DAEMON_PROOF_HEADER, value);
            }
            response
        }
        _ => match check.challenges.issue() {
            Ok(server_nonce) => {
                let mut response = unauthorized_answer(check, "Exai-Proof: answer the challenge");
                if let Ok(value) = HeaderValue::from_str(&proof::challenge(&server_nonce)) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a challenge: {error}\n"),
            )
                .into_response(),
        },
    }
}

fn is_loopback_host(host: &str) -> bool {
    // Strip a port: "localhost:8765", "[::1]:8765", "127.0.0.1".
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// A request from a name or page other than this machine's (the DNS rebinding guard).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotLocal {
    #[error("Host {0:?} is not allowed (only loopback names; DNS rebinding guard)")]
    Host(String),
    #[error("Origin {0:?} is not allowed")]
    Origin(String),
}

/// Refuses requests whose Host or Origin is not loopback (unless remote access is allowed).
pub fn host_and_origin_allowed(headers: &HeaderMap, allow_remote: bool) -> Result<(), NotLocal> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !allow_remote && !is_loopback_host(host) {
        return Err(NotLocal::Host(host.to_string()));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split("://").nth(1).unwrap_or(origin);
        if !(is_loopback_host(origin_host) || allow_remote && origin_host == host) {
            return Err(NotLocal::Origin(origin.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_and_origins_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8765".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
        h.insert(header::ORIGIN, "http://localhost:3000".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            host_and_origin_allowed(&h, false),
            Err(NotLocal::Origin("https://evil.example".into()))
        );
        h.remove(header::ORIGIN);
        h.insert(header::HOST, "evil.example:8765".parse().unwrap());
        assert_eq!(
            host_and_origin_allowed(&h, false).map_err(|e| e.to_string()),
            Err("Host \"evil.example:8765\" is not allowed (only loopback names; DNS rebinding guard)".into())
        );
        assert!(host_and_origin_allowed(&h, true).is_ok());
        h.insert(header::HOST, "[::1]:8765".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
