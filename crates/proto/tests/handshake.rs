//! The hello / welcome exchange: versions must match, the first message must be a hello, the
//! frame type decides the encoding, and every refusal says why.

mod common;

use proto::*;
use world::{EntityId, RegionId};

fn hello_frame(version: u32, encoding: Encoding) -> Frame {
    encode_client(&ClientMsg::Hello(Hello { version, token: "tok".into(), encoding: None }), encoding)
}

#[test]
fn a_hello_of_this_version_is_accepted_in_either_encoding() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let hello = accept_hello(hello_frame(PROTOCOL_VERSION, encoding).as_bytes(), encoding).unwrap();
        assert_eq!(hello.token, "tok");
    }
}

#[test]
fn a_hello_of_another_version_is_refused_with_a_version_mismatch() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let err = accept_hello(hello_frame(PROTOCOL_VERSION + 1, encoding).as_bytes(), encoding).unwrap_err();
        assert_eq!(
            err,
            ProtoError::VersionMismatch { client: PROTOCOL_VERSION + 1, server: PROTOCOL_VERSION }
        );
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
        assert!(err.to_string().contains("update the client"), "{err}");
    }
}

#[test]
fn a_future_hello_that_no_longer_parses_is_still_a_version_mismatch() {
    // Version 9 might have changed every field after the version.
    let json = br#"{"hello":{"version":9,"credentials":{"kind":"oauth"}}}"#;
    assert_eq!(
        accept_hello(json, Encoding::Json),
        Err(ProtoError::VersionMismatch { client: 9, server: PROTOCOL_VERSION })
    );
    let binary = [0u8, 9, 0xff, 0xff, 0xff];
    assert_eq!(
        accept_hello(&binary, Encoding::Binary),
        Err(ProtoError::VersionMismatch { client: 9, server: PROTOCOL_VERSION })
    );
    assert_eq!(peek_hello_version(&binary, Encoding::Binary), Some(9));
    assert_eq!(peek_hello_version(b"{\"ping\":{}}", Encoding::Json), None);
    assert_eq!(peek_hello_version(&[3, 1], Encoding::Binary), None);
}

#[test]
fn a_broken_hello_of_this_version_is_reported_as_what_is_wrong_with_it() {
    let hello = format!(r#"{{"hello":{{"version":{PROTOCOL_VERSION}}}}}"#);
    let err = accept_hello(hello.as_bytes(), Encoding::Json).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Malformed, "{err}");
    let hello = format!(r#"{{"hello":{{"version":{PROTOCOL_VERSION},"token":""}}}}"#);
    let err = accept_hello(hello.as_bytes(), Encoding::Json).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
}

#[test]
fn the_first_message_must_be_a_hello() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let frame = encode_client(&ClientMsg::Ping { nonce: 1 }, encoding);
        let err = accept_hello(frame.as_bytes(), encoding).unwrap_err();
        assert_eq!(err, ProtoError::ExpectedHello { got: "ping" });
        assert_eq!(err.code(), ErrorCode::ExpectedHello);
    }
}

#[test]
fn a_hello_that_names_the_other_encoding_is_refused() {
    let msg = ClientMsg::Hello(Hello { encoding: Some(Encoding::Binary), ..Hello::new("tok") });
    let frame = encode_client(&msg, Encoding::Json);
    let err = accept_hello(frame.as_bytes(), Encoding::Json).unwrap_err();
    assert_eq!(err, ProtoError::EncodingMismatch { frame: Encoding::Json, declared: Encoding::Binary });
    let msg = ClientMsg::Hello(Hello { encoding: Some(Encoding::Json), ..Hello::new("tok") });
    assert!(accept_hello(encode_client(&msg, Encoding::Json).as_bytes(), Encoding::Json).is_ok());
}

#[test]
fn the_client_accepts_a_welcome_and_reports_a_refusal() {
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        agent: EntityId(5),
        region: RegionId::new(0, 1),
        tick_hz: 45,
        draw_distance: 128.0,
    };
    assert_eq!(check_welcome(ServerMsg::Welcome(welcome.clone())), Ok(welcome.clone()));
    let old = Welcome { version: PROTOCOL_VERSION + 1, ..welcome };
    assert_eq!(
        check_welcome(ServerMsg::Welcome(old)),
        Err(ProtoError::VersionMismatch { client: PROTOCOL_VERSION, server: PROTOCOL_VERSION + 1 })
    );
    let refusal = ServerMsg::error(&ProtoError::VersionMismatch { client: 2, server: 1 });
    let err = check_welcome(refusal).unwrap_err();
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
    assert!(matches!(err, ProtoError::Refused { .. }));
    assert_eq!(check_welcome(ServerMsg::Pong { nonce: 1 }), Err(ProtoError::ExpectedWelcome { got: "pong" }));
}

#[test]
fn the_version_mismatch_answer_reaches_the_client_in_its_encoding() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let err = accept_hello(hello_frame(99, encoding).as_bytes(), encoding).unwrap_err();
        let answer = encode_server(&ServerMsg::error(&err), encoding);
        assert_eq!(answer.encoding(), encoding);
        let msg = decode_server(answer.as_bytes(), encoding).unwrap();
        let err = check_welcome(msg).unwrap_err();
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
        assert!(err.to_string().contains("version 99"), "{err}");
    }
}
