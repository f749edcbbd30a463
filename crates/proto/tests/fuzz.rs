//! The decoders are the gateway's front door: over arbitrary bytes and over valid frames that
//! were truncated, bit-flipped, spliced or padded, they never panic, and whatever they accept
//! is a valid message that re-encodes to something they accept again.

mod common;

use common::*;
use proptest::prelude::*;
use proto::limits::*;
use proto::*;

/// What a test does to a valid frame.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Append(Vec<u8>),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Truncate(n) => bytes.truncate(n % len),
            Mutation::FlipBit(i, b) if !bytes.is_empty() => bytes[i % len] ^= 1 << b,
            Mutation::SetByte(i, v) if !bytes.is_empty() => bytes[i % len] = *v,
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(i, n) if !bytes.is_empty() => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Append(v) => bytes.extend_from_slice(v),
            _ => {}
        }
    }
    bytes
}

/// Accepting a frame means: it is a valid message, and it round-trips.
fn check_client_accept(bytes: &[u8], encoding: Encoding) {
    if let Ok(msg) = decode_client(bytes, encoding) {
        assert!(msg.validate().is_ok());
        let again = encode_client(&msg, encoding);
        assert_eq!(decode_client(again.as_bytes(), encoding).as_ref(), Ok(&msg));
    }
    // The handshake path shares the decoder but also peeks at versions.
    let _ = accept_hello(bytes, encoding);
}

fn check_server_accept(bytes: &[u8], encoding: Encoding) {
    if let Ok(msg) = decode_server(bytes, encoding) {
        assert!(msg.validate().is_ok());
        let again = try_encode_server(&msg, encoding).expect("an accepted message re-encodes");
        let back = decode_server(again.as_bytes(), encoding).expect("a re-encoded message decodes");
        // Compare by re-encoding: NaN-free, but -0.0 and 0.0 compare equal either way.
        assert_eq!(encode_server(&back, encoding), again);
        if let ServerMsg::RegionInfo(info) = &msg {
            let _ = info.heights();
        }
    }
}

/// JSON-looking noise reaches deeper into the JSON decoder than uniform bytes do.
fn arb_json_noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("null".to_string()),
            Just("\"hello\"".to_string()),
            Just("\"update\"".to_string()),
            Just("\"chat\"".to_string()),
            Just("\"version\"".to_string()),
            Just("\"token\"".to_string()),
            Just("\"text\"".to_string()),
            Just("\"channel\"".to_string()),
            Just("\"changes\"".to_string()),
            Just("\"pos\"".to_string()),
            Just("1e999".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551616".to_string()),
            Just("\"\\u0000\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            "[a-z0-9\"]{1,6}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_either_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for encoding in [Encoding::Json, Encoding::Binary] {
            check_client_accept(&bytes, encoding);
            check_server_accept(&bytes, encoding);
        }
    }

    #[test]
    fn json_shaped_noise_never_panics_either_decoder(bytes in arb_json_noise()) {
        check_client_accept(&bytes, Encoding::Json);
        check_server_accept(&bytes, Encoding::Json);
    }

    #[test]
    fn mutated_client_frames_never_panic(
        msg in arb_client_msg(),
        encoding in arb_encoding(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let bytes = mutate(encode_client(&msg, encoding).as_bytes().to_vec(), &mutations);
        check_client_accept(&bytes, encoding);
    }

    #[test]
    fn mutated_server_frames_never_panic(
        msg in arb_server_msg(),
        encoding in arb_encoding(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let bytes = mutate(encode_server(&msg, encoding).as_bytes().to_vec(), &mutations);
        check_server_accept(&bytes, encoding);
    }

    #[test]
    fn valid_client_messages_round_trip(msg in arb_client_msg(), encoding in arb_encoding()) {
        let frame = encode_client(&msg, encoding);
        prop_assert!(frame.len() <= MAX_FRAME_BYTES);
        prop_assert_eq!(decode_client(frame.as_bytes(), encoding), Ok(msg));
    }

    #[test]
    fn valid_server_messages_round_trip(msg in arb_server_msg(), encoding in arb_encoding()) {
        let frame = try_encode_server(&msg, encoding).expect("generated messages are valid");
        prop_assert_eq!(decode_server(frame.as_bytes(), encoding), Ok(msg));
    }

    #[test]
    fn hostile_terrain_blobs_never_panic(blob in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Start from a real zstd frame header so that some cases get past the magic number.
        let mut terrain = zstd::bulk::compress(&[0u8; 64], 1).expect("compresses");
        terrain.truncate(4);
        terrain.extend(blob);
        let info = RegionInfo { region: world::RegionId::new(0, 0), water_level: 0.0, terrain };
        prop_assert!(info.heights().is_err());
    }
}
