//! Every message survives both encodings, in the right frame type; the binary layout of the
//! handshake is pinned; decoders refuse what breaks a limit with the error that says so.

mod common;

use common::*;
use proto::limits::*;
use proto::*;
use world::{Controls, EntityId, Quat, RegionId, Shape, Vec3};

#[test]
fn every_client_message_round_trips_in_both_encodings() {
    for msg in every_client_msg() {
        for encoding in [Encoding::Json, Encoding::Binary] {
            let frame = encode_client(&msg, encoding);
            assert_eq!(frame.encoding(), encoding, "JSON goes in text frames, binary in binary frames");
            let back = decode_client(frame.as_bytes(), encoding)
                .unwrap_or_else(|e| panic!("{msg:?} in {encoding}: {e}"));
            assert_eq!(back, msg);
        }
    }
}

#[test]
fn every_server_message_round_trips_in_both_encodings() {
    for msg in every_server_msg() {
        for encoding in [Encoding::Json, Encoding::Binary] {
            let frame = try_encode_server(&msg, encoding).unwrap_or_else(|e| panic!("{}: {e}", msg.kind()));
            assert_eq!(frame, encode_server(&msg, encoding));
            assert_eq!(frame.encoding(), encoding);
            let back = decode_server(frame.as_bytes(), encoding).unwrap_or_else(|e| panic!("{msg:?}: {e}"));
            assert_eq!(back, msg);
        }
    }
}

#[test]
fn binary_is_much_smaller_than_json_for_updates() {
    let update = &every_server_msg()[2];
    let json = encode_server(update, Encoding::Json).len();
    let binary = encode_server(update, Encoding::Binary).len();
    assert!(binary * 2 < json, "binary {binary} bytes vs JSON {json} bytes");
}

#[test]
fn json_messages_are_tagged_objects_with_string_ids() {
    let frame = encode_client(&ClientMsg::Touch { object: OBJECT }, Encoding::Json);
    assert_eq!(frame, Frame::Text(format!(r#"{{"touch":{{"object":"{}"}}}}"#, OBJECT.0)));
    assert_eq!(encode_client(&ClientMsg::Stand {}, Encoding::Json), Frame::Text(r#"{"stand":{}}"#.into()));
    // Hand-written clients may give small ids as numbers and leave the hello's encoding out.
    let msg = decode_client(br#"{"sit":{"object":42}}"#, Encoding::Json).unwrap();
    assert_eq!(msg, ClientMsg::Sit { object: EntityId(42) });
    let msg = decode_client(br#"{"hello":{"version":1,"token":"t"}}"#, Encoding::Json).unwrap();
    assert_eq!(msg, ClientMsg::Hello(Hello { version: 1, token: "t".into(), encoding: None }));
}

#[test]
fn ids_must_be_plain_decimal_strings() {
    for bad in
        [r#""+5""#, r#""-5""#, r#""""#, r#""0x10""#, r#""18446744073709551616""#, r#""1 ""#, "-1", "1.5"]
    {
        let frame = format!(r#"{{"touch":{{"object":{bad}}}}}"#);
        let err = decode_client(frame.as_bytes(), Encoding::Json).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed, "{bad}: {err}");
    }
}

#[test]
fn the_handshake_binary_layout_is_frozen() {
    // Hello is variant 0 with the version first, Welcome variant 0, Error variant 1 with
    // VersionMismatch code 0: old and new peers can always read the handshake.
    let Frame::Binary(hello) = encode_client(&ClientMsg::Hello(Hello::new("t")), Encoding::Binary) else {
        panic!("binary encoding gives binary frames")
    };
    assert_eq!(&hello[..2], &[0, PROTOCOL_VERSION as u8]);
    let welcome = ServerMsg::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        agent: EntityId(1),
        region: RegionId::new(0, 0),
        tick_hz: 45,
        draw_distance: 128.0,
    });
    assert_eq!(&encode_server(&welcome, Encoding::Binary).as_bytes()[..2], &[0, PROTOCOL_VERSION as u8]);
    let error = ServerMsg::Error { code: ErrorCode::VersionMismatch, message: "m".into() };
    assert_eq!(encode_server(&error, Encoding::Binary).as_bytes(), &[1, 0, 1, b'm']);
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    let text = "x".repeat(MAX_FRAME_BYTES);
    let frame = encode_client(&ClientMsg::Chat { channel: 0, text }, Encoding::Json);
    let err = decode_client(frame.as_bytes(), Encoding::Json).unwrap_err();
    assert_eq!(err, ProtoError::TooLarge { len: frame.len(), max: MAX_FRAME_BYTES });
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert_eq!(err.code().close_code(), 1009);

    let junk = vec![0u8; MAX_FRAME_BYTES + 1];
    assert!(matches!(decode_client(&junk, Encoding::Binary), Err(ProtoError::TooLarge { .. })));
    let junk = vec![b' '; MAX_SERVER_FRAME_BYTES + 1];
    assert!(matches!(decode_server(&junk, Encoding::Json), Err(ProtoError::TooLarge { .. })));
}

#[test]
fn a_maximal_update_with_worst_case_strings_fits_the_server_frame_limit() {
    // Control characters are legal in names and floating text, and JSON writes each as \u00XX.
    let view = EntityView {
        name: "\u{1}".repeat(MAX_NAME_BYTES),
        text: "\u{1}".repeat(MAX_TEXT_BYTES),
        parent: Some(EntityId(u64::MAX)),
        pos: Vec3::splat(-123456.79),
        rot: Quat::from_xyzw(-0.12345679, -0.12345679, -0.12345679, -0.12345679),
        vel: Vec3::splat(-123456.79),
        scale: Vec3::splat(-123456.79),
        owner: u64::MAX,
        id: EntityId(u64::MAX),
        kind: EntityKind::Avatar { flying: false, grounded: false, seat: Some(EntityId(u64::MAX)) },
        shape: Shape::Cylinder,
    };
    let update = ServerMsg::Update(Update {
        region: RegionId::new(u16::MAX, u16::MAX),
        tick: u64::MAX,
        seq: u64::MAX,
        changes: vec![EntityUpdate::Full(view); MAX_CHANGES_PER_UPDATE],
        removed: vec![EntityId(u64::MAX); MAX_REMOVED_PER_UPDATE],
    });
    for encoding in [Encoding::Json, Encoding::Binary] {
        let frame = try_encode_server(&update, encoding).expect("a maximal update fits");
        assert!(decode_server(frame.as_bytes(), encoding).is_ok());
    }
    let mut too_many = update;
    if let ServerMsg::Update(u) = &mut too_many {
        u.changes.push(EntityUpdate::Motion {
            id: EntityId(1),
            pos: Vec3::ZERO,
            rot: Quat::IDENTITY,
            vel: Vec3::ZERO,
        });
    }
    assert_eq!(try_encode_server(&too_many, Encoding::Binary).unwrap_err().code(), ErrorCode::Invalid);
}

#[test]
fn trailing_bytes_after_a_binary_message_are_refused() {
    let mut bytes = encode_client(&ClientMsg::Ping { nonce: 1 }, Encoding::Binary).as_bytes().to_vec();
    bytes.push(0);
    assert_eq!(decode_client(&bytes, Encoding::Binary), Err(ProtoError::TrailingBytes { count: 1 }));
    assert!(decode_client(br#"{"ping":{"nonce":1}} x"#, Encoding::Json).is_err());
}

#[test]
fn a_frame_in_the_other_encoding_is_malformed() {
    let json = encode_client(&ClientMsg::Ping { nonce: 1 }, Encoding::Json);
    assert_eq!(decode_client(json.as_bytes(), Encoding::Binary).unwrap_err().code(), ErrorCode::Malformed);
    let binary = encode_client(&ClientMsg::Ping { nonce: 1 }, Encoding::Binary);
    assert_eq!(decode_client(binary.as_bytes(), Encoding::Json).unwrap_err().code(), ErrorCode::Malformed);
}

#[test]
fn client_messages_out_of_range_are_invalid() {
    let bad = [
        ClientMsg::Controls(Controls { forward: 2, ..Controls::default() }),
        ClientMsg::Controls(Controls { up: -128, ..Controls::default() }),
        ClientMsg::Chat { channel: -1, text: "x".into() },
        ClientMsg::Chat { channel: i32::MAX, text: "x".into() },
        ClientMsg::Chat { channel: 0, text: String::new() },
        ClientMsg::Chat { channel: 0, text: "x".repeat(MAX_CHAT_BYTES + 1) },
        ClientMsg::Chat { channel: 0, text: "bell\u{7}".into() },
        ClientMsg::Chat { channel: 0, text: "esc\u{1b}[2J".into() },
        ClientMsg::Hello(Hello::new("")),
        ClientMsg::Hello(Hello::new("has space")),
        ClientMsg::Hello(Hello::new("ünïcode")),
        ClientMsg::Hello(Hello::new("t".repeat(MAX_TOKEN_BYTES + 1))),
    ];
    for msg in bad {
        for encoding in [Encoding::Json, Encoding::Binary] {
            let frame = encode_client(&msg, encoding);
            match decode_client(frame.as_bytes(), encoding) {
                Err(ProtoError::Invalid(_)) => {}
                other => panic!("{msg:?} in {encoding}: expected Invalid, got {other:?}"),
            }
        }
    }
}

#[test]
fn server_messages_with_non_finite_numbers_are_invalid() {
    let region = RegionId::new(0, 0);
    let motion = |pos: Vec3, rot: Quat| {
        ServerMsg::Update(Update {
            region,
            tick: 1,
            seq: 1,
            changes: vec![EntityUpdate::Motion { id: EntityId(1), pos, rot, vel: Vec3::ZERO }],
            removed: vec![],
        })
    };
    let bad = [
        motion(Vec3::new(f32::NAN, 0.0, 0.0), Quat::IDENTITY),
        motion(Vec3::new(0.0, f32::INFINITY, 0.0), Quat::IDENTITY),
        motion(Vec3::new(0.0, 0.0, 2.0e6), Quat::IDENTITY),
        motion(Vec3::ZERO, Quat::from_xyzw(f32::NAN, 0.0, 0.0, 1.0)),
        ServerMsg::Update(Update {
            region,
            tick: 1,
            seq: 1,
            changes: vec![EntityUpdate::Full(EntityView { scale: Vec3::splat(f32::NAN), ..sample_view() })],
            removed: vec![],
        }),
        ServerMsg::Update(Update {
            region,
            tick: 1,
            seq: 1,
            changes: vec![EntityUpdate::Full(EntityView {
                name: "n".repeat(MAX_NAME_BYTES + 1),
                ..sample_view()
            })],
            removed: vec![],
        }),
        ServerMsg::Update(Update { region, tick: 1, seq: 0, changes: vec![], removed: vec![] }),
        ServerMsg::Welcome(Welcome {
            version: 1,
            agent: EntityId(1),
            region,
            tick_hz: 45,
            draw_distance: f32::INFINITY,
        }),
        ServerMsg::Welcome(Welcome {
            version: 1,
            agent: EntityId(1),
            region,
            tick_hz: 0,
            draw_distance: 1.0,
        }),
        ServerMsg::RegionInfo(RegionInfo { region, water_level: f32::NAN, terrain: vec![] }),
        ServerMsg::Chat { from: EntityId(1), name: "n".into(), channel: 0, text: "\u{0}".into() },
    ];
    // Binary carries NaN and infinities bit for bit; validation must catch them.
    for msg in bad {
        let frame = encode_server(&msg, Encoding::Binary);
        match decode_server(frame.as_bytes(), Encoding::Binary) {
            Err(ProtoError::Invalid(_)) => {}
            other => panic!("{msg:?}: expected Invalid, got {other:?}"),
        }
        assert!(try_encode_server(&msg, Encoding::Json).is_err());
    }
}

#[test]
fn terrain_round_trips_through_region_info() {
    let terrain = world::Terrain::generate(7, RegionId::new(2, 3));
    let info = RegionInfo::from_terrain(RegionId::new(2, 3), &terrain).unwrap();
    assert!(info.terrain.len() < 256 * 256 * 4, "compressed: {} bytes", info.terrain.len());
    assert_eq!(info.heights().unwrap(), terrain.heights());
    assert_eq!(info.water_level, terrain.water_level);
    for encoding in [Encoding::Json, Encoding::Binary] {
        let frame = encode_server(&ServerMsg::RegionInfo(info.clone()), encoding);
        let ServerMsg::RegionInfo(back) = decode_server(frame.as_bytes(), encoding).unwrap() else {
            panic!("region info decodes as region info")
        };
        assert_eq!(back.heights().unwrap(), terrain.heights());
    }
}

#[test]
fn bad_terrain_blobs_are_refused_without_panicking() {
    let region = RegionId::new(0, 0);
    assert!(RegionInfo::new(region, &[1.0; 10], 20.0).is_err());
    let garbage = RegionInfo { region, water_level: 20.0, terrain: vec![1, 2, 3, 4] };
    assert!(matches!(garbage.heights(), Err(ProtoError::Terrain(_))));
    // A valid zstd frame that inflates to more than a heightmap (a decompression bomb).
    let bomb = zstd::bulk::compress(&vec![0u8; 4 * 256 * 256 + 4], 3).unwrap();
    let bomb = RegionInfo { region, water_level: 20.0, terrain: bomb };
    assert!(matches!(bomb.heights(), Err(ProtoError::Terrain(_))));
    let short =
        RegionInfo { region, water_level: 20.0, terrain: zstd::bulk::compress(&[0u8; 8], 3).unwrap() };
    assert!(matches!(short.heights(), Err(ProtoError::Terrain(_))));
    let nan = RegionInfo::new(region, &vec![f32::NAN; 256 * 256], 20.0).unwrap();
    assert!(matches!(nan.heights(), Err(ProtoError::Terrain(_))));
}

#[test]
fn entity_changes_convert_to_client_updates() {
    let mut region = world::Region::new(RegionId::new(1, 1), 3);
    let avatar = EntityId(77);
    let out = region.tick(
        0,
        [
            world::Input::AddAvatar { id: avatar, name: "Ada".into(), owner: 77, pos: None },
            world::Input::CreateObject { tag: 1, spec: world::ObjectSpec::default() },
        ],
    );
    let updates: Vec<EntityUpdate> = out.changes.iter().map(EntityUpdate::from).collect();
    assert_eq!(updates.len(), 2);
    let view = updates
        .iter()
        .find_map(|u| match u {
            EntityUpdate::Full(v) if v.id == avatar => Some(v),
            _ => None,
        })
        .expect("the new avatar arrives whole");
    assert_eq!(view.name, "Ada");
    assert_eq!(view.owner, 77);
    assert_eq!(view.shape, Shape::Body);
    assert!(matches!(view.kind, EntityKind::Avatar { seat: None, .. }));
    assert_eq!(view.pos, region.entity(avatar).unwrap().pos, "positions stay region-local");

    let out = region.tick(
        22_222,
        [world::Input::Controls { id: avatar, controls: Controls { forward: 1, ..Controls::default() } }],
    );
    // New controls change the avatar's row (Full); the ticks after only move it.
    assert!(matches!(EntityUpdate::from(&out.changes[0]), EntityUpdate::Full(_)));
    let out = region.tick(44_444, []);
    let motion =
        out.changes.iter().map(EntityUpdate::from).find(|u| u.id() == avatar).expect("the avatar walks");
    let EntityUpdate::Motion { pos, .. } = motion else { panic!("walking is motion only: {motion:?}") };
    assert_eq!(pos, region.entity(avatar).unwrap().pos);
    let msg = ServerMsg::Update(Update {
        region: region.id(),
        tick: out.tick,
        seq: 2,
        changes: out.changes.into_iter().map(EntityUpdate::from).collect(),
        removed: out.removed,
    });
    assert!(try_encode_server(&msg, Encoding::Json).is_ok());
}

#[test]
fn error_messages_are_cut_to_the_limit_at_a_character_boundary() {
    let err = ProtoError::Invalid("é".repeat(MAX_ERROR_MESSAGE_BYTES));
    let ServerMsg::Error { code, message } = ServerMsg::error(&err) else { panic!("an error message") };
    assert_eq!(code, ErrorCode::Invalid);
    assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES && message.len() >= MAX_ERROR_MESSAGE_BYTES - 1);
    assert!(try_encode_server(&ServerMsg::error(&err), Encoding::Json).is_ok());
}

#[test]
fn only_complaints_about_one_message_leave_the_session_open() {
    for code in ErrorCode::ALL {
        let survives = matches!(code, ErrorCode::RateLimited | ErrorCode::UnknownObject);
        assert_eq!(code.closes_session(), !survives, "{code:?}");
        assert!((1000..=1014).contains(&code.close_code()));
    }
}
