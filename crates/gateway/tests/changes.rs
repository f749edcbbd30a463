//! Changes made on purpose through a real gateway to a real host: `create`, `edit` and
//! `delete` are answered with `ack` only once the host has the change (durable when the host
//! keeps a store), and refusals name the request.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use directory::{Directory, MemoryDirectory};
use gateway::Gateway;
use host::durable::{Durability, DurableConfig};
use host::net::Net;
use host::{Host, HostConfig};
use proto::{ClientMsg, Encoding, NewObject, Refusal, ServerMsg};
use support::*;
use world::{EntityId, ObjectEdit, Quat, Shape, Vec3};

/// One host with region (1, 1), durable in `store_dir` when given, and a gateway.
async fn grid_with_store(store_dir: Option<&std::path::Path>) -> Grid {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let host = Host::start(HostConfig { cores: 1, seed: SEED });
    if let Some(path) = store_dir {
        let path = path.to_path_buf();
        let d = Durability::start(
            Box::new(move || Ok(Box::new(store::SqliteStore::open_dir(&path)?) as Box<dyn store::Store>)),
            DurableConfig::default(),
        )
        .expect("the store opens");
        host.set_durability(d);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let net = Net::start(host, listener, dir.clone());
    net.claim_new(HOME, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = Gateway::start(config(), dir.clone(), listener).await.unwrap();
    Grid { dir, host: net, gateway }
}

fn lamp(name: &str) -> NewObject {
    NewObject {
        name: name.into(),
        shape: Shape::Cylinder,
        pos: Vec3::new(120.0, 130.0, 25.0),
        rot: Quat::IDENTITY,
        scale: Vec3::new(0.3, 0.3, 1.5),
        physical: false,
        text: String::new(),
    }
}

/// Reads until the answer to `request_id` (skipping updates, region infos and other answers).
async fn answer(c: &mut Raw, request_id: u64) -> ServerMsg {
    loop {
        match c.recv().await.expect("the session stays open") {
            m @ ServerMsg::Ack { request_id: r, .. } | m @ ServerMsg::Refused { request_id: r, .. }
                if r == request_id =>
            {
                return m
            }
            ServerMsg::Error { code, message } if code.closes_session() => {
                panic!("closed: {code:?} {message}")
            }
            _ => {}
        }
    }
}

async fn joined(g: &Grid, name: &str, encoding: Encoding) -> Raw {
    let pass = g.gateway.guest_token(name).unwrap();
    let mut c = Raw::hello(&pass.url, &pass.token, encoding).await;
    let Some(ServerMsg::Welcome(_)) = c.recv().await else { panic!("a welcome comes first") };
    c
}

fn in_region(g: &Grid, id: EntityId) -> Option<world::Entity> {
    g.host.host().with_region(HOME, |r| r.entity(id).cloned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_acknowledged_once_durable_and_the_object_is_in_the_region_and_the_store() {
    let data = tempfile::tempdir().unwrap();
    let g = grid_with_store(Some(data.path())).await;
    let mut ada = joined(&g, "Ada", Encoding::Json).await;

    ada.send(&ClientMsg::Create { request_id: 1, object: lamp("Lamp") }).await;
    let ServerMsg::Ack { object: lamp_id, durable, tick, .. } = answer(&mut ada, 1).await else {
        panic!("the create is acknowledged")
    };
    assert!(durable, "a host with a store acknowledges durable changes");
    let e = in_region(&g, lamp_id).expect("the acknowledged object is in the region");
    assert_eq!((e.name.as_str(), e.owner), ("Lamp", ada_owner(&g, &e)));
    assert!(tick > 0);
    // The log holds it: what the store would recover has a record at or after that tick.
    let d = g.host.host().durability().unwrap().clone();
    let rec = tokio::task::spawn_blocking(move || d.recovered(HOME)).await.unwrap().unwrap();
    assert!(rec.log.iter().any(|r| r.tick == tick), "the log has the tick that created the lamp");

    let edit = ObjectEdit { text: Some("On".into()), ..ObjectEdit::default() };
    ada.send(&ClientMsg::Edit { request_id: 2, object: lamp_id, edit }).await;
    assert!(
        matches!(answer(&mut ada, 2).await, ServerMsg::Ack { object, durable: true, .. } if object == lamp_id)
    );
    assert_eq!(in_region(&g, lamp_id).unwrap().text, "On");

    ada.send(&ClientMsg::Delete { request_id: 3, object: lamp_id }).await;
    assert!(matches!(answer(&mut ada, 3).await, ServerMsg::Ack { durable: true, .. }));
    assert!(in_region(&g, lamp_id).is_none(), "the acknowledged delete took the lamp away");

    // Deleting it again is refused by the region, naming the request; the session goes on.
    ada.send(&ClientMsg::Delete { request_id: 4, object: lamp_id }).await;
    let ServerMsg::Refused { reason, message, .. } = answer(&mut ada, 4).await else { panic!("refused") };
    assert_eq!(reason, Refusal::Rejected, "{message}");
    ada.send(&ClientMsg::Ping { nonce: 9 }).await;
    loop {
        if let Some(ServerMsg::Pong { nonce: 9 }) = ada.recv().await {
            break;
        }
    }
}

/// The avatar's id is its owner id (tokens name the agent).
fn ada_owner(g: &Grid, e: &world::Entity) -> u64 {
    let avatars: Vec<u64> = g
        .host
        .host()
        .with_region(HOME, |r| r.entities().filter(|x| x.is_avatar()).map(|x| x.id.0).collect())
        .unwrap();
    assert!(avatars.contains(&e.owner), "owned by the creating avatar");
    e.owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_creates_in_one_tick_each_get_their_own_object() {
    let data = tempfile::tempdir().unwrap();
    let g = grid_with_store(Some(data.path())).await;
    let mut a = joined(&g, "Ada", Encoding::Binary).await;
    let mut b = joined(&g, "Bo", Encoding::Json).await;
    // Both clients use the same request ids: they are theirs alone.
    for i in 0..20 {
        a.send(&ClientMsg::Create { request_id: i, object: lamp(&format!("a{i}")) }).await;
        b.send(&ClientMsg::Create { request_id: i, object: lamp(&format!("b{i}")) }).await;
    }
    let mut ids = HashSet::new();
    for (c, who) in [(&mut a, "a"), (&mut b, "b")] {
        // Answers come in any order.
        let mut acked = HashMap::new();
        while acked.len() < 20 {
            match c.recv().await.expect("the session stays open") {
                ServerMsg::Ack { request_id, object, .. } => {
                    assert!(acked.insert(request_id, object).is_none(), "one answer per request");
                }
                m @ ServerMsg::Refused { .. } => panic!("{m:?}"),
                _ => {}
            }
        }
        for (i, object) in acked {
            assert_eq!(
                in_region(&g, object).map(|e| e.name),
                Some(format!("{who}{i}")),
                "the ack names its own object"
            );
            ids.insert(object);
        }
    }
    assert_eq!(ids.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_the_ack_says_the_change_is_not_durable() {
    let g = grid_with_store(None).await;
    let mut ada = joined(&g, "Ada", Encoding::Json).await;
    ada.send(&ClientMsg::Create { request_id: 7, object: lamp("Lamp") }).await;
    let ServerMsg::Ack { object: id, durable, .. } = answer(&mut ada, 7).await else {
        panic!("acknowledged")
    };
    assert!(!durable, "applied, not stored");
    assert!(in_region(&g, id).is_some());
    // An edit the region refuses (a scale past its limit) names the request.
    let edit = ObjectEdit { scale: Some(Vec3::splat(1000.0)), ..ObjectEdit::default() };
    ada.send(&ClientMsg::Edit { request_id: 8, object: id, edit }).await;
    assert!(matches!(answer(&mut ada, 8).await, ServerMsg::Refused { reason: Refusal::Rejected, .. }));
}
