//! docs/protocol.md cannot drift from the code: every JSON example in it is generated here
//! from the real types and must appear in the document verbatim, every frame it shows must
//! decode, and its tables of limits and error codes must match the constants.

use proto::limits::*;
use proto::*;
use world::{EntityId, Quat, RegionId, Shape, Vec3};

const DOC: &str = include_str!("../../../docs/protocol.md");

/// The secret the documented example token is signed with.
pub const EXAMPLE_SECRET: &[u8] = b"example secret, not for real use";
const ADA: EntityId = EntityId(9_007_199_254_740_993);
const BENCH: EntityId = EntityId((1 << 48) | (1 << 32) | 5);
const REGION: RegionId = RegionId::new(1, 1);

fn json_client(msg: &ClientMsg) -> String {
    let Frame::Text(text) = encode_client(msg, Encoding::Json) else { unreachable!("JSON is text") };
    text
}

fn json_server(msg: &ServerMsg) -> String {
    let Frame::Text(text) = try_encode_server(msg, Encoding::Json).expect("examples are valid") else {
        unreachable!("JSON is text")
    };
    text
}

fn example_token() -> String {
    Token { agent: ADA, name: "Ada".into(), expires_unix: 1_893_456_000 }.sign(EXAMPLE_SECRET).expect("signs")
}

fn ada(pos: Vec3, vel: Vec3, seat: Option<EntityId>) -> EntityView {
    EntityView {
        id: ADA,
        kind: EntityKind::Avatar { flying: false, grounded: seat.is_none(), seat },
        shape: Shape::Body,
        pos,
        rot: Quat::IDENTITY,
        vel,
        scale: Vec3::new(0.5, 0.4, 1.8),
        owner: ADA.0,
        name: "Ada".into(),
        text: String::new(),
        parent: None,
    }
}

fn bench() -> EntityView {
    EntityView {
        id: BENCH,
        kind: EntityKind::Object { physical: false },
        shape: Shape::Box,
        pos: Vec3::new(131.0, 128.0, 21.75),
        rot: Quat::IDENTITY,
        vel: Vec3::ZERO,
        scale: Vec3::new(2.0, 0.6, 0.5),
        owner: 0,
        name: "Bench".into(),
        text: "Sit here".into(),
        parent: None,
    }
}

/// The example session of the document, frame by frame: (from the client?, JSON).
fn session() -> Vec<(bool, String)> {
    let heights = vec![21.5f32; TERRAIN_SAMPLES * TERRAIN_SAMPLES];
    let update = |tick, seq, changes, removed| {
        ServerMsg::Update(Update { region: REGION, tick, seq, changes, removed })
    };
    vec![
        (true, json_client(&ClientMsg::Hello(Hello::new(example_token())))),
        (
            false,
            json_server(&ServerMsg::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                agent: ADA,
                region: REGION,
                tick_hz: 45,
                draw_distance: 128.0,
            })),
        ),
        (false, json_server(&ServerMsg::RegionInfo(RegionInfo::new(REGION, &heights, 20.0).expect("packs")))),
        (
            false,
            json_server(&update(
                5000,
                1,
                vec![
                    EntityUpdate::Full(ada(Vec3::new(128.0, 128.0, 22.4), Vec3::ZERO, None)),
                    EntityUpdate::Full(bench()),
                ],
                vec![],
            )),
        ),
        (
            true,
            json_client(&ClientMsg::Controls(world::Controls { forward: 1, ..world::Controls::default() })),
        ),
        (
            false,
            json_server(&update(
                5001,
                2,
                vec![EntityUpdate::Motion {
                    id: ADA,
                    pos: Vec3::new(128.07, 128.0, 22.4),
                    rot: Quat::IDENTITY,
                    vel: Vec3::new(3.2, 0.0, 0.0),
                }],
                vec![],
            )),
        ),
        (true, json_client(&ClientMsg::Chat { channel: 0, text: "Hello!".into() })),
        (
            false,
            json_server(&ServerMsg::Chat {
                from: ADA,
                name: "Ada".into(),
                channel: 0,
                text: "Hello!".into(),
            }),
        ),
        (true, json_client(&ClientMsg::Touch { object: BENCH })),
        (true, json_client(&ClientMsg::Sit { object: BENCH })),
        (
            false,
            json_server(&update(
                5003,
                3,
                vec![EntityUpdate::Full(ada(Vec3::new(131.0, 128.0, 22.9), Vec3::ZERO, Some(BENCH)))],
                vec![],
            )),
        ),
        (true, json_client(&ClientMsg::Stand {})),
        (true, json_client(&ClientMsg::Ping { nonce: 1 })),
        (false, json_server(&ServerMsg::Pong { nonce: 1 })),
        (false, json_server(&update(5010, 4, vec![], vec![BENCH]))),
    ]
}

fn script_error_example() -> ServerMsg {
    ServerMsg::ScriptError {
        object: BENCH,
        script: BENCH.0 + 2,
        region: REGION,
        kind: "out_of_fuel".into(),
        message: "the event used all its fuel (FUEL_PER_EVENT): a runaway loop?".into(),
    }
}

fn lamp() -> NewObject {
    NewObject {
        name: "Lamp".into(),
        shape: Shape::Cylinder,
        pos: Vec3::new(120.0, 130.0, 22.0),
        rot: Quat::IDENTITY,
        scale: Vec3::new(0.3, 0.3, 1.5),
        physical: false,
        text: String::new(),
    }
}

const LAMP: EntityId = EntityId((1 << 48) | (1 << 32) | 6);

/// The changes made on purpose, and their answers.
fn change_examples() -> Vec<String> {
    vec![
        json_client(&ClientMsg::Create { request_id: 1, object: lamp() }),
        json_server(&ServerMsg::Ack { request_id: 1, object: LAMP, tick: 5020, durable: true }),
        json_client(&ClientMsg::Edit {
            request_id: 2,
            object: LAMP,
            edit: world::ObjectEdit { text: Some("On".into()), ..Default::default() },
        }),
        json_server(&ServerMsg::Ack { request_id: 2, object: LAMP, tick: 5023, durable: true }),
        json_client(&ClientMsg::Delete { request_id: 3, object: LAMP }),
        json_server(&ServerMsg::Refused {
            request_id: 3,
            reason: Refusal::TryAgain,
            message: "region (1, 1) is moving to another host; send the change again in a moment".into(),
        }),
    ]
}

/// Examples shown outside the session.
fn other_examples() -> Vec<String> {
    let mut all = change_examples();
    all.extend(other_examples_before_changes());
    all
}

fn other_examples_before_changes() -> Vec<String> {
    vec![
        json_client(&ClientMsg::Hello(Hello { encoding: Some(Encoding::Json), ..Hello::new("TOKEN") })),
        json_client(&ClientMsg::Controls(world::Controls {
            forward: 1,
            strafe: 0,
            turn: -1,
            up: 0,
            jump: false,
            fly: false,
            run: true,
        })),
        json_server(&ServerMsg::error(&ProtoError::VersionMismatch {
            client: PROTOCOL_VERSION + 1,
            server: PROTOCOL_VERSION,
        })),
        json_server(&script_error_example()),
        json_server(&ServerMsg::Error {
            code: ErrorCode::UnknownObject,
            message: "no object 42 within reach".into(),
        }),
        json_server(&ServerMsg::Update(Update {
            region: REGION,
            tick: 5002,
            seq: 7,
            changes: vec![EntityUpdate::Full(EntityView {
                id: EntityId(BENCH.0 + 1),
                parent: Some(BENCH),
                pos: Vec3::new(0.0, 0.0, 0.5),
                scale: Vec3::new(2.0, 0.1, 0.6),
                name: "Backrest".into(),
                text: String::new(),
                ..bench()
            })],
            removed: vec![],
        })),
    ]
}

#[test]
fn the_document_shows_every_generated_example_verbatim() {
    let mut missing = Vec::new();
    for (from_client, json) in session() {
        let line = format!("{} {json}", if from_client { "C:" } else { "S:" });
        if !DOC.contains(&line) {
            missing.push(line);
        }
    }
    for json in other_examples() {
        if !DOC.contains(&json) {
            missing.push(json);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/protocol.md lacks these examples (paste them in):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_frame_in_the_document_decodes() {
    let mut checked = 0;
    let mut in_json_block = false;
    for line in DOC.lines() {
        if line.starts_with("```") {
            in_json_block = line == "```json";
            continue;
        }
        let (client, json) = if let Some(json) = line.strip_prefix("C: ") {
            (Some(true), json)
        } else if let Some(json) = line.strip_prefix("S: ") {
            (Some(false), json)
        } else if in_json_block && line.starts_with('{') {
            (None, line)
        } else {
            continue;
        };
        let as_client = decode_client(json.as_bytes(), Encoding::Json);
        let as_server = decode_server(json.as_bytes(), Encoding::Json);
        match client {
            Some(true) => assert!(as_client.is_ok(), "{json}: {as_client:?}"),
            Some(false) => assert!(as_server.is_ok(), "{json}: {as_server:?}"),
            None => assert!(as_client.is_ok() || as_server.is_ok(), "{json}: {as_client:?} / {as_server:?}"),
        }
        checked += 1;
    }
    assert!(
        checked >= session().len() + other_examples().len(),
        "only {checked} frames found in the document"
    );
}

#[test]
fn the_documented_token_verifies_with_the_documented_secret() {
    let token = example_token();
    assert!(DOC.contains(&token));
    assert!(DOC.contains(std::str::from_utf8(EXAMPLE_SECRET).unwrap()));
    let t = Token::verify(&token, EXAMPLE_SECRET, 1_800_000_000).expect("verifies");
    assert_eq!(t.agent, ADA);
}

#[test]
fn the_document_lists_every_limit_with_its_value() {
    let rows = [
        ("MAX_FRAME_BYTES", MAX_FRAME_BYTES.to_string()),
        ("MAX_SERVER_FRAME_BYTES", MAX_SERVER_FRAME_BYTES.to_string()),
        ("MAX_CHAT_BYTES", MAX_CHAT_BYTES.to_string()),
        ("MAX_TOKEN_BYTES", MAX_TOKEN_BYTES.to_string()),
        ("MAX_ERROR_MESSAGE_BYTES", MAX_ERROR_MESSAGE_BYTES.to_string()),
        ("MAX_SCRIPT_ERROR_KIND_BYTES", MAX_SCRIPT_ERROR_KIND_BYTES.to_string()),
        ("MAX_SCRIPT_ERROR_MESSAGE_BYTES", MAX_SCRIPT_ERROR_MESSAGE_BYTES.to_string()),
        ("MAX_NAME_BYTES", MAX_NAME_BYTES.to_string()),
        ("MAX_TEXT_BYTES", MAX_TEXT_BYTES.to_string()),
        ("MAX_CLIENT_CHANNEL", MAX_CLIENT_CHANNEL.to_string()),
        ("MAX_CHANGES_PER_UPDATE", MAX_CHANGES_PER_UPDATE.to_string()),
        ("MAX_REMOVED_PER_UPDATE", MAX_REMOVED_PER_UPDATE.to_string()),
        ("MAX_TERRAIN_BLOB_BYTES", MAX_TERRAIN_BLOB_BYTES.to_string()),
        ("MAX_TICK_HZ", MAX_TICK_HZ.to_string()),
        ("MAX_DRAW_DISTANCE", MAX_DRAW_DISTANCE.to_string()),
        ("MAX_COORDINATE", MAX_COORDINATE.to_string()),
        ("HELLO_TIMEOUT_SECS", HELLO_TIMEOUT_SECS.to_string()),
        ("MAX_CLIENT_MSGS_PER_SEC", MAX_CLIENT_MSGS_PER_SEC.to_string()),
        ("PROTOCOL_VERSION", PROTOCOL_VERSION.to_string()),
    ];
    for (name, value) in rows {
        let row = format!("| `{name}` | {value} |");
        assert!(DOC.contains(&row), "docs/protocol.md lacks the row: {row}");
    }
}

#[test]
fn the_document_lists_every_error_code_with_its_close_code() {
    for code in ErrorCode::ALL {
        let name = serde_json::to_string(&code).unwrap();
        let row = format!(
            "| `{}` | {} | {} |",
            name.trim_matches('"'),
            if code.closes_session() { "yes" } else { "no" },
            code.close_code()
        );
        assert!(DOC.contains(&row), "docs/protocol.md lacks the row: {row}");
    }
}

fn hex(frame: &Frame) -> String {
    frame.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn the_documented_binary_examples_are_the_real_bytes() {
    let ping = hex(&encode_client(&ClientMsg::Ping { nonce: 300 }, Encoding::Binary));
    let stand = hex(&encode_client(&ClientMsg::Stand {}, Encoding::Binary));
    assert!(DOC.contains(&format!("is the three bytes `{ping}`")), "ping is {ping}");
    assert!(DOC.contains(&format!("is the single byte `{stand}`")), "stand is {stand}");
}

#[test]
fn the_documented_variant_indices_are_the_real_ones() {
    let first = |f: Frame| f.as_bytes()[0];
    let client: Vec<(u8, &str)> =
        common_client().iter().map(|m| (first(encode_client(m, Encoding::Binary)), m.kind())).collect();
    let row: Vec<String> = client.iter().map(|(i, k)| format!("{i} `{k}`")).collect();
    assert!(DOC.contains(&format!("| client message | {} |", row.join(", "))), "{row:?}");

    let server = [
        sample_welcome(),
        ServerMsg::Error { code: ErrorCode::Internal, message: String::new() },
        ServerMsg::RegionInfo(RegionInfo { region: REGION, water_level: 0.0, terrain: vec![] }),
        ServerMsg::Update(Update { region: REGION, tick: 0, seq: 1, changes: vec![], removed: vec![] }),
        ServerMsg::Chat { from: ADA, name: String::new(), channel: 0, text: String::new() },
        ServerMsg::Pong { nonce: 0 },
        script_error_example(),
        ServerMsg::Ack { request_id: 0, object: LAMP, tick: 0, durable: false },
        ServerMsg::Refused { request_id: 0, reason: Refusal::Rejected, message: String::new() },
    ];
    let row: Vec<String> = server
        .iter()
        .map(|m| format!("{} `{}`", first(encode_server(m, Encoding::Binary)), m.kind()))
        .collect();
    assert!(DOC.contains(&format!("| server message | {} |", row.join(", "))), "{row:?}");

    // Error codes count from 0 in table order.
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(postcard::to_stdvec(code).unwrap(), vec![i as u8]);
    }
    let shapes = [Shape::Box, Shape::Sphere, Shape::Cylinder, Shape::Cone, Shape::Torus, Shape::Body];
    for (i, shape) in shapes.iter().enumerate() {
        assert_eq!(postcard::to_stdvec(shape).unwrap(), vec![i as u8]);
    }
    let full = postcard::to_stdvec(&EntityUpdate::Full(bench())).unwrap();
    assert_eq!(&full[..1], &[0], "full is 0");
    let motion = EntityUpdate::Motion { id: BENCH, pos: Vec3::ZERO, rot: Quat::IDENTITY, vel: Vec3::ZERO };
    assert_eq!(postcard::to_stdvec(&motion).unwrap()[0], 1, "motion is 1");
    assert_eq!(postcard::to_stdvec(&EntityKind::Object { physical: false }).unwrap(), vec![0, 0]);
    assert_eq!(postcard::to_stdvec(&Encoding::Binary).unwrap(), vec![1]);
    let refusals = [Refusal::Rejected, Refusal::TryAgain, Refusal::Unknown];
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(postcard::to_stdvec(r).unwrap(), vec![i as u8]);
    }
}

fn common_client() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello(Hello::new("t")),
        ClientMsg::Controls(world::Controls::default()),
        ClientMsg::Chat { channel: 0, text: "x".into() },
        ClientMsg::Touch { object: BENCH },
        ClientMsg::Sit { object: BENCH },
        ClientMsg::Stand {},
        ClientMsg::Ping { nonce: 0 },
        ClientMsg::Create { request_id: 0, object: lamp() },
        ClientMsg::Edit { request_id: 0, object: LAMP, edit: world::ObjectEdit::default() },
        ClientMsg::Delete { request_id: 0, object: LAMP },
    ]
}

fn sample_welcome() -> ServerMsg {
    ServerMsg::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        agent: ADA,
        region: REGION,
        tick_hz: 45,
        draw_distance: 1.0,
    })
}
