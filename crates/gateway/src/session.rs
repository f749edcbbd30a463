//! One client's WebSocket session: the hello and token check, the avatar's arrival and
//! departure, input forwarding with a rate limit, and the merged update stream under a
//! bandwidth cap. Anything wrong with one session ends that session only.
//!
//! Each session is two tasks: this one, which never waits on the socket, and a writer that
//! drains a bounded queue into it. A client that stops reading fills the queue and is dropped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::limits::MAX_CLIENT_MSGS_PER_SEC;
use proto::{
    accept_hello, encode_server, ClientMsg, Encoding, ErrorCode, ProtoError, ServerMsg, Token, Welcome,
};
use tokio::sync::mpsc;
use world::limits::{ACTIVE_TICK_HZ, REGION_SIZE};
use world::{EntityId, Input, RegionId, Vec3};

use crate::changes::{self, ChangeRequest};
use crate::feed::{Mailbox, SessionEvent, SharedMirror};
use crate::limits::*;
use crate::view::View;
use crate::{unix_now, Presence, Shared};

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// Tell the client (an `error` with this code) and close with the code's close code.
    Fatal(ErrorCode, String),
    /// The client fell too far behind; nothing more can be queued for it.
    SlowConsumer,
    /// The client closed or the connection broke.
    Gone,
}

impl End {
    fn from_proto(e: &ProtoError) -> End {
        End::Fatal(e.code(), e.to_string())
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// Runs a session from the upgrade to the end.
pub(crate) async fn run(shared: Arc<Shared>, socket: WebSocket) {
    let (sink, mut stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel::<Message>(shared.config.send_queue_frames.max(2));
    let mut writer = tokio::spawn(write_loop(sink, out_rx));
    let session = shared.next_session.fetch_add(1, Ordering::Relaxed);

    let (end, encoding) = match handshake(&shared, &mut stream).await {
        Err((end, encoding)) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            (end, encoding)
        }
        Ok((token, encoding)) => {
            let mut s = Session::new(&shared, session, token, encoding, out_tx.clone());
            let end = s.live(&mut stream).await;
            s.leave().await;
            match &end {
                End::Fatal(code, _) if *code != ErrorCode::ShuttingDown => {
                    shared.counters.closed_for_errors.fetch_add(1, Ordering::Relaxed);
                }
                End::SlowConsumer => {
                    shared.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            (end, encoding)
        }
    };
    match end {
        End::Fatal(code, message) => {
            tracing::debug!(session, ?code, "closing session: {message}");
            let err = ServerMsg::Error { code, message: truncated(message) };
            let _ = out_tx.try_send(to_message(encode_server(&err, encoding)));
            let close = CloseFrame { code: code.close_code(), reason: "".into() };
            let _ = out_tx.try_send(Message::Close(Some(close)));
        }
        End::SlowConsumer => {
            tracing::info!(session, "dropping a client that stopped reading");
            writer.abort();
        }
        End::Gone => {}
    }
    drop(out_tx);
    if tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Waits for the hello and checks it and its token.
async fn handshake(
    shared: &Shared,
    stream: &mut SplitStream<WebSocket>,
) -> Result<(Token, Encoding), (End, Encoding)> {
    let first = tokio::time::timeout(shared.config.hello_timeout, next_frame(stream)).await;
    let (encoding, bytes) = match first {
        Err(_) => {
            let secs = shared.config.hello_timeout.as_secs_f32();
            let msg = format!("no hello within {secs} s of opening the WebSocket; send the hello first");
            return Err((End::Fatal(ErrorCode::ExpectedHello, msg), Encoding::Json));
        }
        Ok(Inbound::Gone) => return Err((End::Gone, Encoding::Json)),
        Ok(Inbound::Frame(encoding, bytes)) => (encoding, bytes),
    };
    let hello = accept_hello(&bytes, encoding).map_err(|e| (End::from_proto(&e), encoding))?;
    let token = Token::verify(&hello.token, &shared.secret, unix_now())
        .map_err(|e| (End::from_proto(&ProtoError::Token(e)), encoding))?;
    Ok((token, encoding))
}

enum Inbound {
    Frame(Encoding, Vec<u8>),
    Gone,
}

/// The next data frame; WebSocket control frames are the library's business.
async fn next_frame(stream: &mut SplitStream<WebSocket>) -> Inbound {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Inbound::Frame(Encoding::Json, t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(b))) => return Inbound::Frame(Encoding::Binary, b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Inbound::Gone,
            Some(Err(e)) => {
                tracing::debug!("websocket read failed: {e}");
                return Inbound::Gone;
            }
        }
    }
}

async fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        let closing = matches!(msg, Message::Close(_));
        if sink.feed(msg).await.is_err() {
            return;
        }
        // Flush when the queue runs dry: one syscall for a burst of small updates.
        if (closing || rx.is_empty()) && sink.flush().await.is_err() {
            return;
        }
        if closing {
            return;
        }
    }
    let _ = sink.close().await;
}

fn to_message(frame: proto::Frame) -> Message {
    match frame {
        proto::Frame::Text(s) => Message::Text(s.into()),
        proto::Frame::Binary(b) => Message::Binary(b.into()),
    }
}

fn truncated(mut s: String) -> String {
    let max = proto::limits::MAX_ERROR_MESSAGE_BYTES;
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A token bucket over bytes: the per-client bandwidth cap.
struct Bandwidth {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bandwidth {
    fn new(rate: u64, burst: u64) -> Bandwidth {
        Bandwidth { tokens: burst as f64, rate: rate as f64, burst: burst as f64, at: Instant::now() }
    }
    fn available(&mut self) -> i64 {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens as i64
    }
    fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }
}

/// The client's message rate limit: `MAX_CLIENT_MSGS_PER_SEC`, with a burst of one second.
struct RateLimit {
    tokens: f64,
    at: Instant,
    last_warning: Option<Instant>,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit { tokens: f64::from(MAX_CLIENT_MSGS_PER_SEC), at: Instant::now(), last_warning: None }
    }
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(MAX_CLIENT_MSGS_PER_SEC);
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
    /// One warning per second at most: the warnings must not become a flood of their own.
    fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        if self.last_warning.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        self.last_warning = Some(now);
        true
    }
}

struct Session<'a> {
    shared: &'a Shared,
    id: u64,
    agent: EntityId,
    name: String,
    encoding: Encoding,
    out: mpsc::Sender<Message>,
    events: mpsc::Receiver<SessionEvent>,
    mailbox: Mailbox,
    overflow: Arc<AtomicBool>,
    view: View,
    /// Regions watched, with their mirrors.
    mirrors: BTreeMap<RegionId, SharedMirror>,
    at: Arc<Mutex<(RegionId, Vec3)>>,
    registered: bool,
    joined: bool,
    bandwidth: Bandwidth,
    rate: RateLimit,
    last_scan: Option<(RegionId, Vec3, Instant)>,
    started: Instant,
    /// The session's changes waiting for their `ack` or `refused`.
    changes_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Shared,
        id: u64,
        token: Token,
        encoding: Encoding,
        out: mpsc::Sender<Message>,
    ) -> Self {
        let (tx, events) = mpsc::channel(SESSION_EVENT_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let home = shared.config.spawn_region;
        // New avatars appear at the region centre (the region puts them on the ground).
        let spawn = Vec3::new(REGION_SIZE / 2.0, REGION_SIZE / 2.0, 0.0);
        Session {
            shared,
            id,
            agent: token.agent,
            name: token.name,
            encoding,
            out,
            events,
            mailbox: Mailbox { session: id, tx, overflow: overflow.clone() },
            overflow,
            view: View::new(token.agent, home, spawn, shared.config.draw_distance),
            mirrors: BTreeMap::new(),
            at: Arc::new(Mutex::new((home, spawn))),
            registered: false,
            joined: false,
            bandwidth: Bandwidth::new(shared.config.client_bytes_per_sec, shared.config.client_burst_bytes),
            rate: RateLimit::new(),
            last_scan: None,
            started: Instant::now(),
            changes_in_flight: Arc::default(),
        }
    }

    /// From the welcome to the end of the session.
    async fn live(&mut self, stream: &mut SplitStream<WebSocket>) -> End {
        if let Err(end) = self.join().await {
            return end;
        }
        let mut shutdown = self.shared.shutdown.clone();
        let mut every = tokio::time::interval(Duration::from_millis(BACKLOG_FLUSH_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    Err(End::Fatal(ErrorCode::ShuttingDown, "the gateway is stopping; reconnect to another".into()))
                }
                inbound = next_frame(stream) => match inbound {
                    Inbound::Frame(encoding, bytes) => self.on_frame(encoding, &bytes).await,
                    Inbound::Gone => Err(End::Gone),
                },
                Some(event) = self.events.recv() => self.on_event(event),
                _ = every.tick() => self.housekeeping().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Puts the avatar in the world and tells the client where it is.
    async fn join(&mut self) -> Result<(), End> {
        {
            let mut sessions = self.shared.sessions.lock();
            if sessions.contains_key(&self.agent) {
                return Err(End::Fatal(
                    ErrorCode::BadToken,
                    format!(
                        "agent {} already has a session on this gateway; close it first or use another token",
                        self.agent.0
                    ),
                ));
            }
            sessions.insert(self.agent, Presence { mailbox: self.mailbox.clone(), at: self.at.clone() });
            self.registered = true;
        }
        self.shared.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        let home = self.view.home();
        let unavailable = |e: &dyn std::fmt::Display| {
            End::Fatal(ErrorCode::RegionUnavailable, format!("region {home}: {e}; reconnect later"))
        };
        let mirror =
            self.shared.feeds.watch(home, self.mailbox.clone()).await.map_err(|e| unavailable(&e))?;
        self.mirrors.insert(home, mirror);
        let arrive =
            Input::AddAvatar { id: self.agent, name: self.name.clone(), owner: self.agent.0, pos: None };
        self.shared.feeds.send_input(home, arrive).await.map_err(|e| unavailable(&e))?;
        self.joined = true;
        self.send(&ServerMsg::Welcome(Welcome {
            version: proto::PROTOCOL_VERSION,
            agent: self.agent,
            region: home,
            tick_hz: ACTIVE_TICK_HZ,
            draw_distance: self.shared.config.draw_distance,
        }))?;
        self.send_region_info(home)?;
        self.rescan().await
    }

    /// Leaves the world: the avatar is removed and the feeds forget this session.
    async fn leave(&mut self) {
        if self.registered {
            self.shared.sessions.lock().remove(&self.agent);
        }
        for region in self.mirrors.keys() {
            self.shared.feeds.unwatch(*region, self.id);
        }
        if self.joined {
            let home = self.view.home();
            if let Err(e) = self.shared.feeds.send_input(home, Input::RemoveAvatar { id: self.agent }).await {
                tracing::warn!(agent = self.agent.0, %home, "could not remove the avatar: {e}");
            }
            // The avatar may be crossing a border right now (held, or handed over and not yet
            // adopted): ask its home and the neighbours in view again a few times. Removing an
            // avatar that is not there is refused harmlessly, so this is safe to repeat.
            let feeds = self.shared.feeds.clone();
            let (agent, mut regions) = (self.agent, self.mirrors.keys().copied().collect::<Vec<_>>());
            regions.retain(|r| *r != home);
            regions.insert(0, home);
            tokio::spawn(async move {
                for wait_ms in LEAVE_RETRY_MS {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    for &r in &regions {
                        let _ = feeds.send_input(r, Input::RemoveAvatar { id: agent }).await;
                    }
                }
            });
        }
    }

    fn send(&mut self, msg: &ServerMsg) -> Result<(), End> {
        let frame = encode_server(msg, self.encoding);
        let len = frame.len();
        self.bandwidth.spend(len);
        self.shared.counters.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
        self.out.try_send(to_message(frame)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => End::SlowConsumer,
            mpsc::error::TrySendError::Closed(_) => End::Gone,
        })
    }

    fn send_region_info(&mut self, region: RegionId) -> Result<(), End> {
        match self.shared.feeds.region_info(region) {
            Some(info) => self.send(&ServerMsg::RegionInfo((*info).clone())),
            None => Ok(()),
        }
    }

    /// A non-fatal complaint about one message.
    fn complain(&mut self, code: ErrorCode, message: String) -> Result<(), End> {
        debug_assert!(!code.closes_session());
        self.send(&ServerMsg::Error { code, message: truncated(message) })
    }

    async fn on_frame(&mut self, encoding: Encoding, bytes: &[u8]) -> Result<(), End> {
        if encoding != self.encoding {
            return Err(End::Fatal(
                ErrorCode::Malformed,
                format!(
                    "a {encoding} frame in a {} session; the hello's frame type chose the encoding",
                    self.encoding
                ),
            ));
        }
        if !self.rate.allow() {
            self.shared.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            if self.rate.should_warn() {
                return self.complain(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {MAX_CLIENT_MSGS_PER_SEC} messages per second; the excess was dropped"
                    ),
                );
            }
            return Ok(());
        }
        let msg = proto::decode_client(bytes, self.encoding).map_err(|e| End::from_proto(&e))?;
        let home = self.view.home();
        let agent = self.agent;
        let input = match msg {
            ClientMsg::Hello(_) => {
                return Err(End::Fatal(ErrorCode::ExpectedHello, "a second hello in one session".into()));
            }
            ClientMsg::Ping { nonce } => return self.send(&ServerMsg::Pong { nonce }),
            ClientMsg::Chat { channel, text } => return self.chat(channel, text),
            ClientMsg::Controls(controls) => Input::Controls { id: agent, controls },
            ClientMsg::Stand {} => Input::Stand { avatar: agent },
            ClientMsg::Sit { object } | ClientMsg::Touch { object } if !self.view.knows(object) => {
                return self
                    .complain(ErrorCode::UnknownObject, format!("no object {} within reach", object.0));
            }
            ClientMsg::Sit { object } => Input::Sit { avatar: agent, object },
            // The object's scripts get a `touch` event; it must be in the avatar's region.
            ClientMsg::Touch { object } if self.view.region_of(object) != Some(home) => {
                return self.complain(
                    ErrorCode::UnknownObject,
                    format!("object {} is in another region; walk over to touch it", object.0),
                );
            }
            ClientMsg::Touch { object } => Input::Touch { avatar: agent, object },
            ClientMsg::Create { request_id, object } => {
                let spec = object.spec(agent.0);
                let input = Box::new(move |tag| Input::CreateObject { tag, spec });
                return self.change(ChangeRequest { request_id, region: home, object: None, input });
            }
            ClientMsg::Edit { request_id, object, edit } => {
                let region = self.view.region_of(object).unwrap_or(home);
                let input = Box::new(move |_| Input::EditObject { id: object, edit });
                return self.change(ChangeRequest { request_id, region, object: Some(object), input });
            }
            ClientMsg::Delete { request_id, object } => {
                let region = self.view.region_of(object).unwrap_or(home);
                let input = Box::new(move |_| Input::DeleteObject { id: object });
                return self.change(ChangeRequest { request_id, region, object: Some(object), input });
            }
        };
        if let Err(e) = self.shared.feeds.send_input(home, input).await {
            tracing::debug!(agent = agent.0, %home, "input dropped: {e}");
        }
        Ok(())
    }

    /// A change made on purpose: answered later with `ack` or `refused` (see `changes`).
    fn change(&mut self, req: ChangeRequest) -> Result<(), End> {
        let feeds = self.shared.feeds.clone();
        changes::start(feeds, req, self.mailbox.clone(), self.changes_in_flight.clone());
        Ok(())
    }

    /// Public chat (channel 0) reaches the avatars within `CHAT_RANGE_M`, the speaker too.
    /// Other channels are for scripts, which the gateway cannot reach yet: they are dropped.
    fn chat(&mut self, channel: i32, text: String) -> Result<(), End> {
        if channel != 0 {
            return Ok(());
        }
        let (region, pos) = *self.at.lock();
        let me = world_xy(region, pos);
        let msg =
            || ServerMsg::Chat { from: self.agent, name: self.name.clone(), channel, text: text.clone() };
        for p in self.shared.sessions.lock().values() {
            let (r, q) = *p.at.lock();
            let there = world_xy(r, q);
            let d = ((me.0 - there.0).powi(2) + (me.1 - there.1).powi(2) + (me.2 - there.2).powi(2)).sqrt();
            if d <= f64::from(CHAT_RANGE_M) {
                p.mailbox.post(SessionEvent::Chat(msg()));
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: SessionEvent) -> Result<(), End> {
        match event {
            SessionEvent::Chat(msg) | SessionEvent::Notice(msg) | SessionEvent::Reply(msg) => self.send(&msg),
            SessionEvent::Tick { region, output } => {
                let Some(mirror) = self.mirrors.get(&region).cloned() else { return Ok(()) };
                let budget = self.bandwidth.available();
                let updates = {
                    let m = mirror.read();
                    self.view.on_tick(region, &output, &m);
                    let heartbeat = region == self.view.home();
                    self.view.flush(region, output.tick, &m, budget, self.encoding, heartbeat)
                };
                *self.at.lock() = (self.view.home(), self.view.pos());
                self.send_updates(updates)
            }
        }
    }

    fn send_updates(&mut self, updates: Vec<proto::Update>) -> Result<(), End> {
        let n = updates.len() as u64;
        for update in updates {
            self.send(&ServerMsg::Update(update))?;
        }
        self.shared.counters.updates_sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    async fn housekeeping(&mut self) -> Result<(), End> {
        if self.overflow.load(Ordering::Relaxed) {
            return Err(End::SlowConsumer);
        }
        let home = self.view.home();
        match self.shared.feeds.health(home) {
            Some((_, true)) => {
                return Err(End::Fatal(
                    ErrorCode::RegionUnavailable,
                    format!("region {home} cannot be reached; reconnect later"),
                ));
            }
            Some((last, false)) => {
                let silent = last.map_or(self.started.elapsed(), |t| t.elapsed());
                if silent > Duration::from_secs(REGION_SILENT_SECS) {
                    return Err(End::Fatal(
                        ErrorCode::RegionUnavailable,
                        format!("region {home} has sent nothing for {} s; reconnect later", silent.as_secs()),
                    ));
                }
            }
            None => {}
        }
        let due = match self.last_scan {
            None => true,
            Some((r, p, t)) => {
                r != home
                    || (p - self.view.pos()).length() >= SCAN_MOVE_M
                    || t.elapsed() >= Duration::from_millis(SCAN_INTERVAL_MS)
            }
        };
        if due {
            self.rescan().await?;
        }
        for region in self.view.backlog_regions() {
            let Some(mirror) = self.mirrors.get(&region).cloned() else {
                self.view.drop_region(region);
                continue;
            };
            let budget = self.bandwidth.available();
            if budget <= 0 {
                break;
            }
            let updates = {
                let m = mirror.read();
                self.view.flush(region, m.tick, &m, budget, self.encoding, false)
            };
            self.send_updates(updates)?;
        }
        Ok(())
    }

    /// Watches the regions that came within draw distance (sending their region info), stops
    /// watching those well beyond it, and re-checks every entity against the draw distance.
    async fn rescan(&mut self) -> Result<(), End> {
        let wanted: HashSet<RegionId> = self.view.regions_in_view().into_iter().collect();
        for region in &wanted {
            if self.mirrors.contains_key(region) {
                continue;
            }
            // A region missing from the directory is the edge of the world, not an error.
            if let Ok(mirror) = self.shared.feeds.watch(*region, self.mailbox.clone()).await {
                self.mirrors.insert(*region, mirror);
                self.send_region_info(*region)?;
            }
        }
        let leaving: Vec<RegionId> = self
            .mirrors
            .keys()
            .filter(|r| !wanted.contains(r) && self.beyond_hysteresis(**r))
            .copied()
            .collect();
        let mut dropped = Vec::new();
        for region in leaving {
            if let Some(m) = self.mirrors.remove(&region) {
                self.shared.feeds.unwatch(region, self.id);
                dropped.push((region, m));
            }
        }
        {
            let guards: Vec<_> = self.mirrors.iter().map(|(r, m)| (*r, m.read())).collect();
            let refs: Vec<(RegionId, &crate::feed::Mirror)> =
                guards.iter().map(|(r, g)| (*r, &**g)).collect();
            self.view.scan(&refs);
        }
        // Tell the client to forget what it held in the regions it no longer watches.
        for (region, mirror) in dropped {
            let updates = {
                let m = mirror.read();
                self.view.flush(region, m.tick, &m, 0, self.encoding, false)
            };
            self.view.drop_region(region);
            self.send_updates(updates)?;
        }
        self.last_scan = Some((self.view.home(), self.view.pos(), Instant::now()));
        Ok(())
    }

    /// A region is only let go once it is clearly out of view, so that an avatar pacing
    /// along the edge of the draw distance does not make it come and go.
    fn beyond_hysteresis(&self, region: RegionId) -> bool {
        let home = self.view.home();
        let dx = (i32::from(region.x) - i32::from(home.x)) as f32 * REGION_SIZE;
        let dy = (i32::from(region.y) - i32::from(home.y)) as f32 * REGION_SIZE;
        let p = self.view.pos();
        let nx = dx.max(p.x.min(dx + REGION_SIZE)) - p.x;
        let ny = dy.max(p.y.min(dy + REGION_SIZE)) - p.y;
        (nx * nx + ny * ny).sqrt() > self.shared.config.draw_distance + SCAN_MOVE_M
    }
}

/// World coordinates in metres (f64: far regions are beyond f32's metre precision).
fn world_xy(region: RegionId, pos: Vec3) -> (f64, f64, f64) {
    let size = f64::from(REGION_SIZE);
    (
        f64::from(region.x) * size + f64::from(pos.x),
        f64::from(region.y) * size + f64::from(pos.y),
        f64::from(pos.z),
    )
}
