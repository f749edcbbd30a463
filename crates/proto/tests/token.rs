//! Session tokens: what is signed verifies, and anything tampered with, expired, or checked
//! with another secret is refused with the reason.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use proto::limits::MAX_TOKEN_BYTES;
use proto::{ClientMsg, Encoding, Hello, ProtoError, Token, TokenError};
use world::EntityId;

const SECRET: &[u8] = b"gateway secret, 32 bytes long!!!";
const NOW: u64 = 1_750_000_000;

fn ada() -> Token {
    Token { agent: EntityId(u64::MAX - 1), name: "Ada Lovelace".into(), expires_unix: NOW + 3600 }
}

#[test]
fn a_signed_token_verifies_and_says_who_it_is() {
    let token = ada().sign(SECRET).unwrap();
    assert_eq!(Token::verify(&token, SECRET, NOW), Ok(ada()));
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
    // Signing is deterministic: the same token and secret give the same string.
    assert_eq!(ada().sign(SECRET).unwrap(), token);
}

#[test]
fn a_signed_token_is_a_valid_hello_token() {
    let token = ada().sign(SECRET).unwrap();
    for encoding in [Encoding::Json, Encoding::Binary] {
        let frame = proto::encode_client(&ClientMsg::Hello(Hello::new(token.clone())), encoding);
        let hello = proto::accept_hello(frame.as_bytes(), encoding).unwrap();
        assert_eq!(Token::verify(&hello.token, SECRET, NOW), Ok(ada()));
    }
}

#[test]
fn an_expired_token_is_refused() {
    let token = ada().sign(SECRET).unwrap();
    let err = Token::verify(&token, SECRET, NOW + 3600).unwrap_err();
    assert_eq!(err, TokenError::Expired { expires_unix: NOW + 3600, now_unix: NOW + 3600 });
    assert_eq!(ProtoError::from(err).code(), proto::ErrorCode::TokenExpired);
    assert!(Token::verify(&token, SECRET, NOW + 3599).is_ok());
}

#[test]
fn a_token_checked_with_another_secret_is_refused() {
    let token = ada().sign(SECRET).unwrap();
    let err = Token::verify(&token, b"another secret of 32 bytes......", NOW).unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(ProtoError::from(err).code(), proto::ErrorCode::BadToken);
}

#[test]
fn a_token_with_a_rewritten_payload_is_refused() {
    let token = ada().sign(SECRET).unwrap();
    let (_, signature) = token.split_once('.').unwrap();
    // Give ourselves another agent id and a later expiry, keep the old signature.
    let forged = Token { agent: EntityId(1), expires_unix: u64::MAX, ..ada() };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert_eq!(Token::verify(&format!("{payload}.{signature}"), SECRET, NOW), Err(TokenError::BadSignature));
}

#[test]
fn malformed_tokens_are_refused() {
    let token = ada().sign(SECRET).unwrap();
    for bad in ["", "nodot", ".", "a.b.c", "!!!.???", &token.replace('.', "")] {
        assert!(Token::verify(bad, SECRET, NOW).is_err(), "{bad:?}");
    }
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(Token::verify(&long, SECRET, NOW), Err(TokenError::TooLong(MAX_TOKEN_BYTES + 1)));
    // A correctly signed payload that is not a token is malformed, not trusted.
    use hmac::Mac;
    let payload = URL_SAFE_NO_PAD.encode(b"[1,2,3]");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    assert_eq!(Token::verify(&format!("{payload}.{signature}"), SECRET, NOW), Err(TokenError::Malformed));
}

#[test]
fn short_secrets_and_long_names_are_refused() {
    assert_eq!(ada().sign(b"short"), Err(TokenError::WeakSecret(5)));
    assert_eq!(Token::verify("a.b", b"", NOW), Err(TokenError::WeakSecret(0)));
    let long = Token { name: "n".repeat(64), ..ada() };
    assert_eq!(long.sign(SECRET), Err(TokenError::NameTooLong));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_change_to_a_token_is_refused(index in any::<usize>(), byte in 0x21u8..0x7f) {
        let token = ada().sign(SECRET).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = index % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let tampered = String::from_utf8(bytes).unwrap();
        // Base64 may decode two spellings of the last character to the same bytes; only a
        // token with the very same meaning may still pass.
        if let Ok(t) = Token::verify(&tampered, SECRET, NOW) {
            prop_assert_eq!(t, ada());
        }
    }

    #[test]
    fn arbitrary_strings_never_verify(s in "[ -~]{0,200}") {
        prop_assert!(Token::verify(&s, SECRET, NOW).is_err());
    }
}
