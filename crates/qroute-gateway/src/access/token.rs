//! Short-lived bearer tokens from `POST /v1/auth/login`: a credential to
//! hand a browser or a job that expires on its own.
//!
//! `qrt.<payload>.<mac>`, both base64url: the payload is
//! `{"sub": key id or "master", "exp": Unix seconds}`, the MAC an
//! HMAC-SHA256 over it. The MAC key is derived from the first master key, so
//! every replica that shares the master key accepts the same tokens and a
//! restart does not log anyone out; rotating the master key ends them all.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "qrt.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The key id, or `master`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Signs and checks tokens.
pub struct Tokens {
    /// Keyed once; cloned per token.
    mac: Hmac<Sha256>,
}

impl Tokens {
    pub fn new(master_key: &str) -> qroute_core::Result<Tokens> {
        let mut h = Sha256::new();
        h.update(b"qroute token key v1\0");
        h.update(master_key.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| qroute_core::Error::InvalidInput(format!("token key: {e}")))?;
        Ok(Tokens { mac })
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{PREFIX}{payload}.{tag}")
    }

    /// The claims of a token this gateway signed that has not expired at
    /// `now_s`; `None` for anything else. The MAC is checked in constant time.
    pub fn verify(&self, token: &str, now_s: u64) -> Option<Claims> {
        let (payload, tag) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (now_s < claims.exp).then_some(claims)
    }

    pub fn looks_like(token: &str) -> bool {
        token.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire() {
        let t = Tokens::new("master-1").unwrap();
        let c = Claims {
            sub: "key_1".into(),
            exp: 1_000,
        };
        let token = t.sign(&c);
        assert_eq!(t.verify(&token, 999), Some(c.clone()));
        assert_eq!(t.verify(&token, 1_000), None, "expired");
        assert_eq!(
            Tokens::new("master-2").unwrap().verify(&token, 10),
            None,
            "another master key"
        );
        // Any change to the payload breaks the MAC.
        let forged = t.sign(&Claims {
            sub: "master".into(),
            exp: 1_000,
        });
        let (_, tag) = forged.rsplit_once('.').unwrap();
        let (head, _) = token.rsplit_once('.').unwrap();
        assert_eq!(t.verify(&format!("{head}.{tag}"), 10), None);
        for junk in ["", "qrt.", "qrt.a.b", "qrt..", "sk-123", "qrt.%%%.###"] {
            assert_eq!(t.verify(junk, 10), None, "{junk}");
        }
    }
}
