//! Session tokens: who a connection is and until when, signed with HMAC-SHA256 under the
//! gateway's secret. Pure functions (the caller passes the current time), so they test without
//! a clock. The protocol itself treats tokens as opaque strings.
//!
//! Format: `base64url(JSON payload) "." base64url(HMAC-SHA256(secret, first part))`, unpadded,
//! so a token is printable ASCII and safe in URLs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use world::EntityId;

use crate::limits::{MAX_NAME_BYTES, MAX_TOKEN_BYTES, MIN_TOKEN_SECRET_BYTES};
use crate::wire;

type HmacSha256 = Hmac<Sha256>;

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The avatar id of the session.
    #[serde(with = "wire::id")]
    pub agent: EntityId,
    /// Display name.
    pub name: String,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires_unix: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token secret is {0} bytes; use at least {MIN_TOKEN_SECRET_BYTES} random bytes")]
    WeakSecret(usize),
    #[error("token is {0} bytes, longer than {MAX_TOKEN_BYTES}")]
    TooLong(usize),
    #[error("token name is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("token is not of the form PAYLOAD.SIGNATURE in unpadded base64url")]
    Malformed,
    #[error("token signature does not match: forged, altered, or signed with another secret")]
    BadSignature,
    #[error("token expired at {expires_unix} (now {now_unix}); ask for a new one")]
    Expired { expires_unix: u64, now_unix: u64 },
}

impl Token {
    /// Signs the token with `secret`.
    pub fn sign(&self, secret: &[u8]) -> Result<String, TokenError> {
        let mac = keyed(secret)?;
        if self.name.len() > MAX_NAME_BYTES {
            return Err(TokenError::NameTooLong);
        }
        // Serializing a struct of strings and integers to JSON cannot fail.
        let json = serde_json::to_vec(self).expect("a token always serializes");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signature = URL_SAFE_NO_PAD.encode(mac.chain_update(payload.as_bytes()).finalize().into_bytes());
        let token = format!("{payload}.{signature}");
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong(token.len()));
        }
        Ok(token)
    }

    /// Checks a token's signature with `secret` and its expiry against `now_unix` (seconds
    /// since the Unix epoch), and returns what it says. The signature is checked first, in
    /// constant time, so nothing is parsed from an unauthenticated payload.
    pub fn verify(token: &str, secret: &[u8], now_unix: u64) -> Result<Token, TokenError> {
        let mac = keyed(secret)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong(token.len()));
        }
        let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        mac.chain_update(payload.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let parsed: Token = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if parsed.name.len() > MAX_NAME_BYTES {
            return Err(TokenError::NameTooLong);
        }
        if now_unix >= parsed.expires_unix {
            return Err(TokenError::Expired { expires_unix: parsed.expires_unix, now_unix });
        }
        Ok(parsed)
    }
}

fn keyed(secret: &[u8]) -> Result<HmacSha256, TokenError> {
    if secret.len() < MIN_TOKEN_SECRET_BYTES {
        return Err(TokenError::WeakSecret(secret.len()));
    }
    // HMAC takes keys of any length; the error branch cannot happen.
    HmacSha256::new_from_slice(secret).map_err(|_| TokenError::WeakSecret(secret.len()))
}
