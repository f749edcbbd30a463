//! Client sessions through a real gateway to a real host on loopback: the handshake, walking,
//! chat, and each way a client can misbehave, which ends that client's session only.

mod support;

use std::time::{Duration, Instant};

use proto::{ClientMsg, Encoding, EntityUpdate, ErrorCode, Hello, SeqTracker, ServerMsg, Token};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use world::{Controls, EntityId, Input, ObjectSpec, Vec3};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_walks_and_sees_its_avatar_move_with_gap_free_sequence_numbers() {
    let g = grid(config()).await;
    let pass = g.gateway.guest_token("Ada").unwrap();
    let mut ada = Raw::hello(&pass.url, &pass.token, Encoding::Json).await;

    let Some(ServerMsg::Welcome(w)) = ada.recv().await else { panic!("a welcome comes first") };
    assert_eq!((w.region, w.draw_distance, w.agent.0.to_string()), (HOME, 128.0, pass.agent.clone()));
    let Some(ServerMsg::RegionInfo(info)) = ada.recv().await else { panic!("then the region info") };
    assert_eq!(info.region, HOME);
    assert_eq!(info.heights().unwrap().len(), 256 * 256);

    let mut seq = SeqTracker::new();
    let mut start_x = None;
    let mut x = 0.0;
    let deadline = Instant::now() + PATIENCE;
    while start_x.is_none_or(|s: f32| x < s + 3.0) {
        assert!(Instant::now() < deadline, "the avatar never walked 3 m (at {x}, from {start_x:?})");
        let u = ada.next_update().await.expect("the stream goes on");
        seq.observe(u.seq);
        for c in &u.changes {
            if c.id() == w.agent {
                x = match c {
                    EntityUpdate::Full(v) => v.pos.x,
                    EntityUpdate::Motion { pos, .. } => pos.x,
                };
                if start_x.is_none() {
                    start_x = Some(x);
                    // At heading 0 forward is east (+x).
                    ada.send(&ClientMsg::Controls(Controls { forward: 1, ..Controls::default() })).await;
                }
            }
        }
    }
    assert_eq!((seq.gaps(), seq.replays()), (0, 0), "sequence numbers go 1, 2, 3… without gaps");
    assert_eq!(seq.last(), Some(seq.received()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_is_refused_with_bad_token_and_close_code_1008() {
    let g = grid(config()).await;
    let forged = Token { agent: EntityId(7), name: "Mallory".into(), expires_unix: u64::MAX / 2 }
        .sign(b"another secret, not the gateway's")
        .unwrap();
    let mut c = Raw::hello(&g.gateway.ws_url(), &forged, Encoding::Json).await;
    let (code, message) = c.until_closed().await.expect("an error before the close");
    assert_eq!(code, ErrorCode::BadToken, "{message}");
    assert_eq!(c.close_code, Some(1008));
    assert_eq!(g.gateway.stats().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_token_expired() {
    let mut cfg = config();
    cfg.secret = Some(b"sixteen or more bytes of secret".to_vec());
    let g = grid(cfg).await;
    let old = Token { agent: EntityId(8), name: "Rip".into(), expires_unix: 1 }
        .sign(b"sixteen or more bytes of secret");
    let mut c = Raw::hello(&g.gateway.ws_url(), &old.unwrap(), Encoding::Binary).await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::TokenExpired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_that_session() {
    let g = grid(config()).await;
    let a = g.gateway.guest_token("A").unwrap();
    let b = g.gateway.guest_token("B").unwrap();
    let mut good = Raw::hello(&a.url, &a.token, Encoding::Binary).await;
    let mut bad = Raw::hello(&b.url, &b.token, Encoding::Json).await;
    good.next_update().await.unwrap();
    bad.next_update().await.unwrap();

    bad.send_raw(Message::text("{\"walk\":{\"fast\":true}}")).await;
    let (code, _) = bad.until_closed().await.unwrap();
    assert_eq!((code, bad.close_code), (ErrorCode::Malformed, Some(1002)));

    let before = good.next_update().await.unwrap().seq;
    let mut after = before;
    for _ in 0..20 {
        after = good.next_update().await.expect("the other session goes on").seq;
    }
    assert_eq!(after, before + 20);
    eventually("the bad session is counted", || g.gateway.stats().closed_for_errors == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_too_large_and_closes_with_1009() {
    let g = grid(config()).await;
    let p = g.gateway.guest_token("Big").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Json).await;
    c.next_update().await.unwrap();
    let text = "x".repeat(1000);
    let huge = format!("{{\"chat\":{{\"channel\":0,\"text\":\"{}\"}}}}", text.repeat(20));
    c.send_raw(Message::text(huge)).await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::TooLarge));
    assert_eq!(c.close_code, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_messages_end_the_session_with_a_clear_error() {
    let g = grid(config()).await;
    // Something other than a hello first.
    let mut c = Raw::open(&g.gateway.ws_url(), Encoding::Json).await;
    c.send(&ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::ExpectedHello));

    // A second hello.
    let p = g.gateway.guest_token("Twice").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Json).await;
    c.next_update().await.unwrap();
    c.send(&ClientMsg::Hello(Hello::new(p.token.clone()))).await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::ExpectedHello));

    // A binary frame in a JSON session.
    let p = g.gateway.guest_token("Mixed").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Json).await;
    c.next_update().await.unwrap();
    c.send_raw(Message::binary(vec![6, 1])).await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::Malformed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let mut cfg = config();
    cfg.hello_timeout = Duration::from_millis(300);
    let g = grid(cfg).await;
    let mut c = Raw::open(&g.gateway.ws_url(), Encoding::Json).await;
    let (code, message) = c.until_closed().await.unwrap();
    assert_eq!(code, ErrorCode::ExpectedHello);
    assert!(message.contains("no hello within"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_too_fast_has_the_excess_dropped_and_stays_connected() {
    let g = grid(config()).await;
    let p = g.gateway.guest_token("Chatty").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Binary).await;
    for nonce in 0..200 {
        c.send(&ClientMsg::Ping { nonce }).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), c.recv()).await {
            Ok(Some(ServerMsg::Pong { .. })) => pongs += 1,
            Ok(Some(ServerMsg::Error { code: ErrorCode::RateLimited, .. })) => limited += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("rate limiting must not close the session"),
            Err(_) => break,
        }
    }
    assert!(limited >= 1, "the client is told once");
    assert!((60..200).contains(&pongs), "a second's worth is answered: {pongs}");
    assert!(g.gateway.stats().rate_limited >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_chat_reaches_avatars_nearby_and_touching_an_unknown_object_is_refused() {
    let g = grid(config()).await;
    let a = g.gateway.guest_token("Ada").unwrap();
    let b = g.gateway.guest_token("Bob").unwrap();
    let mut ada = Raw::hello(&a.url, &a.token, Encoding::Json).await;
    let mut bob = Raw::hello(&b.url, &b.token, Encoding::Json).await;
    ada.next_update().await.unwrap();
    bob.next_update().await.unwrap();
    ada.send(&ClientMsg::Chat { channel: 0, text: "Hello!".into() }).await;
    let heard = loop {
        if let Some(ServerMsg::Chat { name, text, .. }) = bob.recv().await {
            break (name, text);
        }
    };
    assert_eq!(heard, ("Ada".to_string(), "Hello!".to_string()));

    bob.send(&ClientMsg::Touch { object: EntityId(42) }).await;
    let refused = loop {
        match bob.recv().await {
            Some(ServerMsg::Error { code, .. }) => break code,
            Some(_) => {}
            None => panic!("unknown_object is not fatal"),
        }
    };
    assert_eq!(refused, ErrorCode::UnknownObject);
    bob.next_update().await.expect("still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_s_avatar_leaves_the_region() {
    let g = grid(config()).await;
    let p = g.gateway.guest_token("Brief").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Binary).await;
    c.next_update().await.unwrap();
    let avatars = || g.host.host().stats(HOME).map(|s| s.avatars).unwrap_or(99);
    eventually("the avatar arrived", || avatars() == 1).await;
    drop(c);
    eventually("the avatar is removed", || avatars() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_while_another_keeps_receiving() {
    let mut cfg = config();
    cfg.send_queue_frames = 8;
    let g = grid(cfg).await;
    // A few hundred gliding objects around the spawn point: every tick moves them all.
    for k in 0..400u64 {
        let a = k as f32 * 0.7;
        let spec = ObjectSpec {
            name: format!("glider {k}"),
            pos: Vec3::new(128.0 + 30.0 * a.cos(), 128.0 + 30.0 * a.sin(), 40.0),
            vel: Vec3::new(a.sin(), -a.cos(), 0.0),
            ..ObjectSpec::default()
        };
        g.host.input(HOME, Input::CreateObject { tag: k, spec });
    }
    let reader = g.gateway.guest_token("Reader").unwrap();
    let mut reader = Raw::hello(&reader.url, &reader.token, Encoding::Binary).await;

    // The slow client keeps its receive window tiny and never reads after its hello.
    let sleeper = g.gateway.guest_token("Sleeper").unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(g.gateway.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(sleeper.url.as_str(), stream).await.unwrap();
    let hello = proto::encode_client(&ClientMsg::Hello(Hello::new(sleeper.token.clone())), Encoding::Json);
    futures_util::SinkExt::send(
        &mut ws,
        Message::text(String::from_utf8(hello.as_bytes().to_vec()).unwrap()),
    )
    .await
    .unwrap();

    let mut seq = SeqTracker::new();
    let deadline = Instant::now() + PATIENCE;
    while g.gateway.stats().dropped_slow == 0 {
        assert!(Instant::now() < deadline, "the sleeper was never dropped: {:?}", g.gateway.stats());
        seq.observe(reader.next_update().await.expect("the reader is never disconnected").seq);
    }
    let at_drop = seq.received();
    for _ in 0..45 {
        seq.observe(reader.next_update().await.expect("the reader goes on after the drop").seq);
    }
    assert_eq!(seq.received(), at_drop + 45);
    assert_eq!(seq.gaps(), 0);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_endpoint_mints_working_tokens_and_can_be_turned_off() {
    let g = grid(config()).await;
    let body = http_get(g.gateway.addr(), "/guest?name=Zoe").await;
    let pass: gateway::GuestPass = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(pass.name, "Zoe");
    let mut zoe = Raw::hello(&pass.url, &pass.token, Encoding::Json).await;
    assert!(matches!(zoe.recv().await, Some(ServerMsg::Welcome(_))));

    let mut cfg = config();
    cfg.guest_tokens = false;
    let closed = grid(cfg).await;
    let answer = http_get(closed.gateway.addr(), "/guest?name=Zoe").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_tells_every_client_and_removes_their_avatars() {
    let g = grid(config()).await;
    let p = g.gateway.guest_token("Last").unwrap();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Json).await;
    c.next_update().await.unwrap();
    let host = g.host.clone();
    g.gateway.shutdown().await;
    assert_eq!(c.until_closed().await.map(|e| e.0), Some(ErrorCode::ShuttingDown));
    assert_eq!(c.close_code, Some(1001));
    eventually("the avatar is removed", || host.host().stats(HOME).map(|s| s.avatars).unwrap_or(9) == 0)
        .await;
}
