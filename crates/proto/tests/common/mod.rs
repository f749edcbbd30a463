//! Shared by the proto tests: one sample of every message, and proptest strategies that
//! generate valid messages of every kind.

#![allow(dead_code)] // each test binary uses a different part

use proptest::prelude::*;
use proto::limits::*;
use proto::*;
use world::{Controls, EntityId, Quat, RegionId, Shape, Vec3};

pub const AGENT: EntityId = EntityId(9_007_199_254_740_993);
pub const OBJECT: EntityId = EntityId((1 << 48) | (1 << 32) | 5);

pub fn sample_view() -> EntityView {
    EntityView {
        id: OBJECT,
        kind: EntityKind::Object { physical: true },
        shape: Shape::Sphere,
        pos: Vec3::new(130.5, 126.0, 24.25),
        rot: Quat::IDENTITY,
        vel: Vec3::new(0.0, 0.0, -1.5),
        scale: Vec3::new(0.5, 0.5, 0.5),
        owner: AGENT.0,
        name: "Ball".into(),
        text: "touch me".into(),
        parent: None,
    }
}

/// One of every message (and of every variant inside them).
pub fn every_client_msg() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello(Hello::new("tok.sig")),
        ClientMsg::Hello(Hello { encoding: Some(Encoding::Json), ..Hello::new("a.b") }),
        ClientMsg::Hello(Hello { encoding: Some(Encoding::Binary), ..Hello::new("a.b") }),
        ClientMsg::Controls(Controls {
            forward: 1,
            strafe: -1,
            turn: 0,
            up: 1,
            jump: true,
            fly: false,
            run: true,
        }),
        ClientMsg::Chat { channel: 0, text: "hello, world ✓\nsecond line".into() },
        ClientMsg::Chat { channel: MAX_CLIENT_CHANNEL, text: "x".repeat(MAX_CHAT_BYTES) },
        ClientMsg::Touch { object: OBJECT },
        ClientMsg::Sit { object: EntityId(u64::MAX) },
        ClientMsg::Stand {},
        ClientMsg::Ping { nonce: u64::MAX },
    ]
}

pub fn every_server_msg() -> Vec<ServerMsg> {
    let region = RegionId::new(1, 1);
    let avatar = EntityView {
        id: AGENT,
        kind: EntityKind::Avatar { flying: false, grounded: true, seat: Some(OBJECT) },
        shape: Shape::Body,
        parent: None,
        ..sample_view()
    };
    let child = EntityView { id: EntityId(OBJECT.0 + 1), parent: Some(OBJECT), ..sample_view() };
    let heights: Vec<f32> = (0..TERRAIN_SAMPLES * TERRAIN_SAMPLES).map(|i| (i % 97) as f32 * 0.25).collect();
    let mut msgs = vec![
        ServerMsg::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            agent: AGENT,
            region,
            tick_hz: 45,
            draw_distance: 128.0,
        }),
        ServerMsg::RegionInfo(RegionInfo::new(region, &heights, 20.0).expect("a full heightmap packs")),
        ServerMsg::Update(Update {
            region,
            tick: 1042,
            seq: 1,
            changes: vec![
                EntityUpdate::Full(sample_view()),
                EntityUpdate::Full(avatar),
                EntityUpdate::Full(child),
                EntityUpdate::Motion {
                    id: OBJECT,
                    pos: Vec3::new(1.0, 2.0, 3.0),
                    rot: Quat::from_rotation_z(0.5),
                    vel: Vec3::ZERO,
                },
            ],
            removed: vec![EntityId(3), EntityId(u64::MAX)],
        }),
        ServerMsg::Update(Update { region, tick: u64::MAX, seq: u64::MAX, changes: vec![], removed: vec![] }),
        ServerMsg::Chat { from: AGENT, name: "Ada".into(), channel: -7, text: "hi".into() },
        ServerMsg::Pong { nonce: 7 },
        ServerMsg::ScriptError {
            object: EntityId(5),
            script: u64::MAX,
            region,
            kind: "out_of_fuel".into(),
            message: "the event used all of its 2000000 fuel".into(),
        },
    ];
    for code in ErrorCode::ALL {
        msgs.push(ServerMsg::Error { code, message: format!("{code:?} happened") });
    }
    msgs
}

pub fn arb_encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Json), Just(Encoding::Binary)]
}

fn arb_id() -> impl Strategy<Value = EntityId> {
    any::<u64>().prop_map(EntityId)
}

fn arb_text(max_chars: usize) -> impl Strategy<Value = String> {
    // Printable text with some multi-byte characters, kept within the byte limit by the caller.
    proptest::string::string_regex(&format!("[a-zA-Z0-9 ,.!?é✓\n]{{0,{max_chars}}}")).expect("valid regex")
}

pub fn arb_client_msg() -> impl Strategy<Value = ClientMsg> {
    let axis = -1i8..=1;
    prop_oneof![
        (any::<u32>(), "[!-~]{1,64}", proptest::option::of(arb_encoding()))
            .prop_map(|(version, token, encoding)| ClientMsg::Hello(Hello { version, token, encoding })),
        (axis.clone(), axis.clone(), axis.clone(), axis, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(forward, strafe, turn, up, jump, fly, run)| ClientMsg::Controls(Controls {
                forward,
                strafe,
                turn,
                up,
                jump,
                fly,
                run
            })),
        (0..=MAX_CLIENT_CHANNEL, arb_text(200))
            .prop_filter("chat text is not empty", |(_, t)| !t.is_empty())
            .prop_map(|(channel, text)| ClientMsg::Chat { channel, text }),
        arb_id().prop_map(|object| ClientMsg::Touch { object }),
        arb_id().prop_map(|object| ClientMsg::Sit { object }),
        Just(ClientMsg::Stand {}),
        any::<u64>().prop_map(|nonce| ClientMsg::Ping { nonce }),
    ]
}

fn arb_f32() -> impl Strategy<Value = f32> {
    -1000.0f32..1000.0
}

fn arb_vec3() -> impl Strategy<Value = Vec3> {
    (arb_f32(), arb_f32(), arb_f32()).prop_map(|(x, y, z)| Vec3::new(x, y, z))
}

fn arb_quat() -> impl Strategy<Value = Quat> {
    (-3.2f32..3.2, -3.2f32..3.2).prop_map(|(a, b)| Quat::from_rotation_z(a) * Quat::from_rotation_x(b))
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Box),
        Just(Shape::Sphere),
        Just(Shape::Cylinder),
        Just(Shape::Cone),
        Just(Shape::Torus),
        Just(Shape::Body),
    ]
}

fn arb_kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![
        any::<bool>().prop_map(|physical| EntityKind::Object { physical }),
        (any::<bool>(), any::<bool>(), proptest::option::of(arb_id()))
            .prop_map(|(flying, grounded, seat)| EntityKind::Avatar { flying, grounded, seat }),
    ]
}

fn arb_entity_update() -> impl Strategy<Value = EntityUpdate> {
    prop_oneof![
        (
            (arb_id(), arb_kind(), arb_shape(), arb_vec3(), arb_quat(), arb_vec3(), arb_vec3()),
            (any::<u64>(), arb_text(20), arb_text(60), proptest::option::of(arb_id())),
        )
            .prop_map(|((id, kind, shape, pos, rot, vel, scale), (owner, name, text, parent))| {
                EntityUpdate::Full(EntityView {
                    id,
                    kind,
                    shape,
                    pos,
                    rot,
                    vel,
                    scale,
                    owner,
                    name,
                    text,
                    parent,
                })
            }),
        (arb_id(), arb_vec3(), arb_quat(), arb_vec3()).prop_map(|(id, pos, rot, vel)| EntityUpdate::Motion {
            id,
            pos,
            rot,
            vel
        }),
    ]
}

fn arb_region() -> impl Strategy<Value = RegionId> {
    (any::<u16>(), any::<u16>()).prop_map(|(x, y)| RegionId::new(x, y))
}

pub fn arb_server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (any::<u32>(), arb_id(), arb_region(), 1..=MAX_TICK_HZ, 0.0f32..=MAX_DRAW_DISTANCE).prop_map(
            |(version, agent, region, tick_hz, draw_distance)| ServerMsg::Welcome(Welcome {
                version,
                agent,
                region,
                tick_hz,
                draw_distance
            })
        ),
        (arb_region(), arb_f32(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(region, water_level, terrain)| ServerMsg::RegionInfo(RegionInfo {
                region,
                water_level,
                terrain
            })
        ),
        (
            arb_region(),
            any::<u64>(),
            1..u64::MAX,
            proptest::collection::vec(arb_entity_update(), 0..6),
            proptest::collection::vec(arb_id(), 0..6)
        )
            .prop_map(|(region, tick, seq, changes, removed)| ServerMsg::Update(Update {
                region,
                tick,
                seq,
                changes,
                removed
            })),
        (arb_id(), arb_text(20), any::<i32>(), arb_text(200))
            .prop_map(|(from, name, channel, text)| ServerMsg::Chat { from, name, channel, text }),
        any::<u64>().prop_map(|nonce| ServerMsg::Pong { nonce }),
        (arb_id(), any::<u64>(), arb_region(), "[a-z_]{1,32}", arb_text(100)).prop_map(
            |(object, script, region, kind, message)| ServerMsg::ScriptError {
                object,
                script,
                region,
                kind,
                message
            }
        ),
        (proptest::sample::select(ErrorCode::ALL.to_vec()), arb_text(100))
            .prop_map(|(code, message)| ServerMsg::Error { code, message }),
    ]
}
