//! Challenge–response over TCP: the shim and the daemon each prove they hold the token, which never crosses the wire.
//!
//! 1. The shim asks to upgrade `/ws` with `Authorization: Exai-Proof cn=<its nonce>`; the daemon
//!    answers 401 with `WWW-Authenticate: Exai-Proof sn=<a fresh nonce>` (single use, 30 s).
//! 2. The shim upgrades again with `Authorization: Exai-Proof sn=…, cn=…, mac=HMAC(token, shim|sn|cn)`.
//!    The daemon redeems `sn`, checks `mac` and answers 101 with
//!    `Exai-Daemon-Proof: HMAC(token, daemon|sn|cn)`, which the shim checks before it sends anything.
//!
//! A listener without the token learns two random nonces and one MAC over them: nothing it can
//! replay (the daemon's nonce is single use) or turn into the token (HMAC-SHA256, 256-bit token).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;

/// The authorization scheme.
pub const SCHEME: &str = "Exai-Proof";
/// The daemon's answer header carrying its proof.
pub const DAEMON_PROOF_HEADER: &str = "exai-daemon-proof";
const NONCE_BYTES: usize = 32;
/// How long a challenge may wait for its answer.
const NONCE_LIFE: Duration = Duration::from_secs(30);
/// Challenges outstanding at once; the oldest go first (a flood only delays honest shims).
const MAX_OUTSTANDING: usize = 1024;

/// A fresh random nonce, as hex.
pub fn new_nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(crate::hex::hex(&bytes))
}

/// Whether `text` has the shape of a nonce (so nothing else reaches a MAC or a header).
pub fn is_nonce(text: &str) -> bool {
    text.len() == NONCE_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Which side a MAC speaks for: the two never verify as each other.
#[derive(Clone, Copy)]
enum Role {
    Shim,
    Daemon,
}

fn key(token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes())
}

fn message(role: Role, server_nonce: &str, client_nonce: &str) -> Vec<u8> {
    let label = match role {
        Role::Shim => "exai-proof-v1 shim",
        Role::Daemon => "exai-proof-v1 daemon",
    };
    format!("{label}\n{server_nonce}\n{client_nonce}").into_bytes()
}

fn tag(token: &str, role: Role, server_nonce: &str, client_nonce: &str) -> hmac::Tag {
    hmac::sign(&key(token), &message(role, server_nonce, client_nonce))
}

/// Constant-time check of a hex MAC (ring compares the whole tag, length included).
fn verify(token: &str, role: Role, server_nonce: &str, client_nonce: &str, given: &str) -> bool {
    from_hex(given).is_some_and(|given| {
        hmac::verify(
            &key(token),
            &message(role, server_nonce, client_nonce),
            &given,
        )
        .is_ok()
    })
}

/// The shim's proof that it holds `token`.
pub fn shim_proof(token: &str, server_nonce: &str, client_nonce: &str) -> String {
    crate::hex::hex(tag(token, Role::Shim, server_nonce, client_nonce).as_ref())
}

/// The daemon's proof that it holds `token`.
pub fn daemon_proof(token: &str, server_nonce: &str, client_nonce: &str) -> String {
    crate::hex::hex(tag(token, Role::Daemon, server_nonce, client_nonce).as_ref())
}

pub fn shim_proof_holds(token: &str, server_nonce: &str, client_nonce: &str, mac: &str) -> bool {
    verify(token, Role::Shim, server_nonce, client_nonce, mac)
}

pub fn daemon_proof_holds(token: &str, server_nonce: &str, client_nonce: &str, mac: &str) -> bool {
    verify(token, Role::Daemon, server_nonce, client_nonce, mac)
}

/// The fields of an `Exai-Proof` header (`sn=…, cn=…, mac=…`, each optional).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProofFields {
    pub server_nonce: Option<String>,
    pub client_nonce: Option<String>,
    pub mac: Option<String>,
}

/// Reads an `Authorization` or `WWW-Authenticate` value of the `Exai-Proof` scheme; `None` for other schemes.
pub fn parse(value: &str) -> Option<ProofFields> {
    let rest = value.strip_prefix(SCHEME)?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let mut fields = ProofFields::default();
    for pair in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "sn" => fields.server_nonce = Some(value),
            "cn" => fields.client_nonce = Some(value),
            "mac" => fields.mac = Some(value),
            _ => {}
        }
    }
    Some(fields)
}

/// The header value of step 1 (`mac` absent) or step 2.
pub fn authorization(client_nonce: &str, answer: Option<(&str, &str)>) -> String {
    match answer {
        None => format!("{SCHEME} cn={client_nonce}"),
        Some((server_nonce, mac)) => {
            format!("{SCHEME} sn={server_nonce}, cn={client_nonce}, mac={mac}")
        }
    }
}

/// The daemon's `WWW-Authenticate` challenge.
pub fn challenge(server_nonce: &str) -> String {
    format!("{SCHEME} sn={server_nonce}")
}

/// The daemon's outstanding challenges.
#[derive(Default)]
pub struct Challenges {
    issued: Mutex<VecDeque<(Instant, String)>>,
}

impl Challenges {
    /// A new challenge nonce, remembered until redeemed or expired.
    pub fn issue(&self) -> Result<String, getrandom::Error> {
        let nonce = new_nonce()?;
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|(at, _)| at.elapsed() < NONCE_LIFE);
        if issued.len() >= MAX_OUTSTANDING {
            issued.pop_front();
        }
        issued.push_back((Instant::now(), nonce.clone()));
        Ok(nonce)
    }

    /// Takes `nonce` out if it was issued and is still fresh: each challenge is answered once.
    pub fn redeem(&self, nonce: &str) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        match issued.iter().position(|(_, n)| n == nonce) {
            Some(index) => issued
                .remove(index)
                .is_some_and(|(at, _)| at.elapsed() < NONCE_LIFE),
            None => false,
        }
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    #[test]
    fn each_side_verifies_only_its_own_proof_with_the_right_token() {
        let (sn, cn) = (new_nonce().unwrap(), new_nonce().unwrap());
        let shim = shim_proof(TOKEN, &sn, &cn);
        assert!(shim_proof_holds(TOKEN, &sn, &cn, &shim));
        assert!(!shim_proof_holds("another token", &sn, &cn, &shim));
        assert!(
            !shim_proof_holds(TOKEN, &cn, &sn, &shim),
            "nonces are not interchangeable"
        );
        assert!(!daemon_proof_holds(TOKEN, &sn, &cn, &shim), "no reflection");
        let daemon = daemon_proof(TOKEN, &sn, &cn);
        assert!(daemon_proof_holds(TOKEN, &sn, &cn, &daemon));
        assert!(!daemon_proof_holds(TOKEN, &sn, &cn, "zz"));
        assert!(!daemon_proof_holds(TOKEN, &sn, &cn, &daemon[..10]));
        assert!(!shim.contains(TOKEN) && !daemon.contains(TOKEN));
    }

    #[test]
    fn headers_round_trip_and_other_schemes_are_not_ours() {
        let header = authorization("c1", Some(("s1", "m1")));
        assert_eq!(
            parse(&header),
            Some(ProofFields {
                server_nonce: Some("s1".into()),
                client_nonce: Some("c1".into()),
                mac: Some("m1".into()),
            })
        );
        assert_eq!(
            parse(&challenge("s2")).and_then(|f| f.server_nonce),
            Some("s2".into())
        );
        assert_eq!(parse("Bearer abc"), None);
        assert_eq!(parse("Exai-Proofx cn=1"), None);
    }

    #[test]
    fn a_challenge_is_redeemed_once() {
        let challenges = Challenges::default();
        let nonce = challenges.issue().unwrap();
        assert!(is_nonce(&nonce));
        assert!(challenges.redeem(&nonce));
        assert!(!challenges.redeem(&nonce));
        assert!(!challenges.redeem("never issued"));
    }
}
