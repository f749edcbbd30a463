//! The host on the network: its link listener, live migration in and out, forwarding of
//! inputs for regions that moved, and subscriptions to regions' tick outputs.
//!
//! The migration state machines (crate `migrate`) make every decision; this module only moves
//! their messages over links, asks the directory what they ask, and loads or unloads regions
//! when they say so.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use directory::{Directory, Placement};
use link::{Link, LinkMsg, LinkTx, Role};
use migrate::{FenceResult, MigrationId, Msg, Policy, Report, Source, SourceEvent, Target, TargetEvent};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use world::{Input, RegionId};

use crate::{Host, HostError};

/// Messages for one outgoing migration waiting to be handled.
const MIGRATION_QUEUE: usize = 1024;
/// How often incoming migrations are checked for timeouts.
const TARGET_SWEEP: Duration = Duration::from_millis(10);
/// Finished incoming migrations are remembered this long, to answer late duplicates.
const KEEP_FINISHED_US: u64 = 30_000_000;
/// Finished migration statuses kept for the API.
const MAX_KEPT_STATUSES: usize = 256;
/// Updates kept per region for subscribers that follow it here from its previous owner
/// (about a third of a second at 45 Hz: longer than re-subscribing takes).
const REPLAY_TICKS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("region {region} is owned by {owner} at epoch {epoch}, not by this host")]
    OwnedElsewhere { region: RegionId, owner: String, epoch: u64 },
    #[error("region {0} is not in the directory")]
    NotInDirectory(RegionId),
    #[error("region {0} is already migrating")]
    AlreadyMigrating(RegionId),
    #[error("cannot migrate region {0} to this same host")]
    ToSelf(RegionId),
    #[error("directory: {0}")]
    Directory(#[from] directory::DirectoryError),
    #[error("cannot reach host {peer}: {error}")]
    Unreachable { peer: String, error: String },
}

/// A migration as the API shows it, while it runs and after.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationStatus {
    pub id: MigrationId,
    pub region: String,
    pub to: String,
    pub phase: String,
    pub rounds: u32,
    pub bytes: u64,
    pub done: bool,
    pub committed: bool,
    /// From the last tick on the source to the first tick on the target (or, after an abort,
    /// to the source's next tick), in milliseconds.
    pub freeze_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub forced_freeze: bool,
    pub abort_reason: Option<String>,
    pub bytes_per_round: Vec<u64>,
    /// The freeze's ends (unix time, microseconds): the end of the source's last tick and of
    /// the target's first one (reported by the target; it may arrive before this host has
    /// noted its own last tick).
    #[serde(rename = "freeze_from_unix_us")]
    last_source_tick_unix: Option<u64>,
    #[serde(rename = "freeze_to_unix_us")]
    first_target_tick_unix: Option<u64>,
    #[serde(skip)]
    started_unix: u64,
}

impl MigrationStatus {
    fn settle_freeze(&mut self) {
        if let (Some(last), Some(first)) = (self.last_source_tick_unix, self.first_target_tick_unix) {
            self.freeze_ms = Some(first.saturating_sub(last) as f64 / 1000.0);
        }
    }
}

struct Incoming {
    target: Target,
    reply: LinkTx,
    region: RegionId,
    finished_at: Option<u64>,
    /// Live script instances kept in step with the replica, round by round. Behind their own
    /// lock: preparing them takes long, and must not hold up the rounds (or the final one).
    prepared: Arc<Mutex<Prepared>>,
    /// A round's scripts are being prepared: its acknowledgement waits (the periodic sweep
    /// must not send it early, or the source freezes while this host is still busy).
    holding_ack: bool,
    /// Committed and loaded here (or failed to load): inputs no longer wait for it.
    loaded: bool,
    /// Raises this host's async threads from the first dirty round's arrival (or a
    /// stop-and-copy's final round) to the first tick here (or the abort): every hop of the
    /// commit runs on them (see [`crate::boost`]), the final round's arrival included, which
    /// comes just as the source's last tick fans out through the gateway. Renewed by every
    /// chunk, so `MAX_FREEZE_BOOST` bounds the time since the last one, not the whole rounds.
    boost: Option<crate::boost::FreezeBoost>,
}

/// A region's latest update frames, newest last.
struct Replay {
    frames: std::collections::VecDeque<(u64, link::Frame)>,
    /// Ticks still to keep with nobody subscribed (counting down from an arrival).
    unheard_ticks: u32,
}

impl Replay {
    fn arrived() -> Replay {
        Replay { frames: Default::default(), unheard_ticks: REPLAY_TICKS as u32 }
    }

    fn push(&mut self, tick: u64, frame: link::Frame) {
        if self.frames.len() == REPLAY_TICKS {
            self.frames.pop_front();
        }
        self.frames.push_back((tick, frame));
    }
}

#[derive(Default)]
struct Prepared {
    scripts: Option<crate::scripting::RegionScripts>,
    /// Replica generation the scripts were last brought up to.
    generation: Option<u64>,
}

pub struct Net {
    host: Host,
    name: String,
    directory: Arc<dyn Directory>,
    me: Weak<Net>,
    peers: Mutex<HashMap<String, LinkTx>>,
    subscribers: Mutex<HashMap<RegionId, Vec<LinkTx>>>,
    /// Each region's latest updates, for subscribers that follow it here (taken while holding
    /// `subscribers`, so a replay and the live stream neither overlap nor leave a hole).
    replay: Mutex<HashMap<RegionId, Replay>>,
    outgoing: Mutex<HashMap<MigrationId, mpsc::Sender<Msg>>>,
    incoming: Mutex<HashMap<MigrationId, Incoming>>,
    pending_inputs: Mutex<HashMap<RegionId, Vec<Input>>>,
    moved: Mutex<HashMap<RegionId, String>>,
    statuses: Mutex<Vec<MigrationStatus>>,
    /// The directory's placements, kept current by its watch (net_watch.rs).
    placements: crate::net_watch::Placements,
}

impl Net {
    /// Puts `host` on the network: accepts links on `listener`, whose address is this host's
    /// name in the directory.
    pub fn start(host: Host, listener: tokio::net::TcpListener, directory: Arc<dyn Directory>) -> Arc<Net> {
        let name = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let net = Arc::new_cyclic(|me| Net {
            host: host.clone(),
            name,
            directory,
            me: me.clone(),
            peers: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashMap::new()),
            replay: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            pending_inputs: Mutex::new(HashMap::new()),
            moved: Mutex::new(HashMap::new()),
            statuses: Mutex::new(Vec::new()),
            placements: Default::default(),
        });
        let weak = Arc::downgrade(&net);
        host.observe(Box::new(move |region, out| {
            let Some(net) = weak.upgrade() else { return };
            let mut subs = net.subscribers.lock();
            let mut replay = net.replay.lock();
            let list = subs.get_mut(&region);
            let wanted = list.as_ref().is_some_and(|l| !l.is_empty());
            // Kept while someone listens, and for the first ticks after an arrival, when the
            // subscribers are still on their way here from the previous owner.
            let keep = match replay.get_mut(&region) {
                Some(r) if r.unheard_ticks > 0 || wanted => {
                    r.unheard_ticks = if wanted { 0 } else { r.unheard_ticks - 1 };
                    Some(r)
                }
                _ => None,
            };
            if !wanted && keep.is_none() {
                return;
            }
            let frame = LinkMsg::Update { region, output: out.clone() }.encode();
            if let Some(r) = keep {
                r.push(out.tick, frame.clone());
            }
            if let Some(list) = list {
                list.retain(|tx| !tx.is_closed());
                for tx in list.iter() {
                    tx.send_frame(frame.clone());
                }
            }
        }));
        let n = net.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let n = n.clone();
                tokio::spawn(async move {
                    match link::establish(stream, Role::Host, &n.name).await {
                        Ok(link) => n.serve_link(link).await,
                        Err(e) => tracing::warn!("refused a link: {e}"),
                    }
                });
            }
        });
        crate::net_border::start(&net);
        crate::net_watch::start(&net);
        let n = Arc::downgrade(&net);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TARGET_SWEEP);
            loop {
                every.tick().await;
                let Some(n) = n.upgrade() else { break };
                n.sweep_incoming();
            }
        });
        net
    }

    /// The directory's placements as this host follows them.
    pub fn placements(&self) -> &crate::net_watch::Placements {
        &self.placements
    }

    /// Where a region that is not here runs: where it went from here, else the owner the
    /// directory's watch last told of (never this host).
    fn owner_elsewhere(&self, region: RegionId) -> Option<String> {
        let moved = self.moved.lock().get(&region).cloned();
        moved.or_else(|| self.placements.current_owner(region)).filter(|o| *o != self.name)
    }

    /// This host's link address: its name in the directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// Creates a new region here, claiming it in the directory at epoch 1.
    pub async fn claim_new(&self, region: RegionId, seed: Option<u32>) -> Result<(), NetError> {
        let me = Placement { host: self.name.clone(), epoch: 1 };
        if !self.directory.compare_and_swap(region, None, me).await? {
            let p = self.directory.get(region).await?.ok_or(NetError::NotInDirectory(region))?;
            if p.host != self.name || self.host.holds(region) {
                return Err(NetError::OwnedElsewhere { region, owner: p.host, epoch: p.epoch });
            }
        }
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.load_new(region, seed))
            .await
            .map_err(|e| NetError::Unreachable { peer: "tick pool".into(), error: e.to_string() })??;
        Ok(())
    }

    /// Stops running a region here. Subscribers are told it is gone (with no new owner: they
    /// look it up in the directory again).
    pub fn unload(&self, region: RegionId) -> Result<world::Region, HostError> {
        let state = self.host.unload(region)?;
        self.replay.lock().remove(&region);
        if let Some(subs) = self.subscribers.lock().remove(&region) {
            for s in subs {
                s.send(&LinkMsg::NotHere { region, owner: None });
            }
        }
        Ok(state)
    }

    /// Loads a region restored from a snapshot and takes it over in the directory, fencing
    /// whoever held it (they must be dead: this is how a region restarts elsewhere).
    pub async fn take_over(&self, state: world::Region) -> Result<(), NetError> {
        let region = state.id();
        loop {
            let current = self.directory.get(region).await?;
            let next =
                Placement { host: self.name.clone(), epoch: current.as_ref().map_or(1, |p| p.epoch + 1) };
            if self.directory.compare_and_swap(region, current.map(|p| p.epoch), next).await? {
                break;
            }
        }
        self.moved.lock().remove(&region);
        self.host.load(state)?;
        Ok(())
    }

    /// An input for a region wherever it is: here, arriving here, or moved on.
    pub fn input(&self, region: RegionId, input: Input) {
        self.deliver_input(region, input);
    }

    /// Routes an input that is not for a region ticking here.
    fn route_elsewhere(&self, region: RegionId, input: Input) {
        {
            // A region still arriving, or committed here and about to be loaded (the target
            // tells the source before it loads the region, so the source's forwarded inputs
            // can come first): held until it ticks here. Checked under the held inputs' lock,
            // which the commit takes only after loading, so none is left behind.
            let mut pending = self.pending_inputs.lock();
            if self.host.holds(region) {
                drop(pending);
                if let Some(input) = self.offer_here(region, input) {
                    self.forward(region, input);
                }
                return;
            }
            let arriving = self.incoming.lock().values().any(|i| {
                i.region == region && i.target.phase() != migrate::TargetPhase::Aborted && !i.loaded
            });
            if arriving {
                pending.entry(region).or_default().push(input);
                return;
            }
        }
        self.forward(region, input);
    }

    /// Sends an input to the region's owner elsewhere (where it moved, or the directory says).
    fn forward(&self, region: RegionId, input: Input) {
        let owner = self.owner_elsewhere(region);
        match owner.and_then(|o| self.peers.lock().get(&o).cloned()) {
            Some(tx) => {
                tx.send(&LinkMsg::Input { region, input });
            }
            None => tracing::debug!(%region, "input for a region that is not here dropped"),
        }
    }

    /// Queues an input for a region held here; hands it back when the region was released for
    /// a migration's commit between the caller's check and the queue (to be sent after it).
    fn offer_here(&self, region: RegionId, input: Input) -> Option<Input> {
        match self.host.offer(region, input) {
            Ok(()) => None,
            Err((HostError::UnknownRegion(_), input)) => Some(input),
            Err((e, _)) => {
                tracing::debug!(%region, "input dropped: {e}");
                None
            }
        }
    }

    fn deliver_input(&self, region: RegionId, input: Input) {
        let input = if self.host.holds(region) { self.offer_here(region, input) } else { Some(input) };
        if let Some(input) = input {
            self.route_elsewhere(region, input);
        }
    }

    pub(crate) async fn peer(&self, addr: &str) -> Result<LinkTx, NetError> {
        if let Some(tx) = self.peers.lock().get(addr).filter(|t| !t.is_closed()).cloned() {
            return Ok(tx);
        }
        let link = link::connect(addr, Role::Host, &self.name)
            .await
            .map_err(|e| NetError::Unreachable { peer: addr.to_string(), error: e.to_string() })?;
        let tx = link.tx.clone();
        self.peers.lock().insert(addr.to_string(), tx.clone());
        let me = self.me.upgrade().expect("net is alive while it runs");
        tokio::spawn(async move { me.serve_link(link).await });
        Ok(tx)
    }

    async fn serve_link(self: Arc<Self>, mut link: Link) {
        if link.peer_role == Role::Host {
            self.peers.lock().insert(link.peer_name.clone(), link.tx.clone());
        }
        while let Some(msg) = link.rx.recv().await {
            match msg {
                LinkMsg::Migration { region, msg } => {
                    let handled = if matches!(msg, migrate::Msg::Chunk { freeze: None, .. }) {
                        // A pre-copy round's chunk: taking in a full copy is tens of
                        // milliseconds of decoding and hashing. Off this task at a lower CPU
                        // priority, so the ticks of every region (here and on the source, when
                        // they share a machine) go first; in order, as this task waits for it.
                        let (net, tx) = (self.clone(), link.tx.clone());
                        let rt = tokio::runtime::Handle::current();
                        crate::background(move || {
                            let _in_runtime = rt.enter(); // what it starts may spawn tasks
                            net.on_migration_msg(region, msg, &tx)
                        })
                        .await
                        .ok()
                        .flatten()
                    } else {
                        let last = matches!(msg, migrate::Msg::Chunk { freeze: Some(_), .. });
                        let handled = self.on_migration_msg(region, msg, &link.tx);
                        if last {
                            // The commit's compare-and-swap was just spawned onto this worker's
                            // next-task slot, where no other worker can take it: let it go out
                            // now, not after this link's next messages.
                            tokio::task::yield_now().await;
                        }
                        handled
                    };
                    if let Some(id) = handled {
                        // A pre-copy round just landed: prepare its scripts before acknowledging
                        // it, off this task (other links go on meanwhile). The source's round
                        // timing then includes the preparation, so it freezes only once the
                        // target keeps up, and the commit finds the instances ready.
                        let net = self.clone();
                        let _ = crate::background(move || net.prepare_scripts(id)).await;
                        if let Some(inc) = self.incoming.lock().get_mut(&id) {
                            inc.holding_ack = false;
                        }
                        self.drive_incoming(id);
                    }
                }
                LinkMsg::Input { region, input } => self.deliver_input(region, input),
                LinkMsg::Change { region, request, input } => {
                    crate::durable::link_change(&self.host, region, request, input, link.tx.clone())
                }
                LinkMsg::Crossing { from, to, msg } => {
                    if let Err(e) = self.host.crossing_msg(to, from, msg) {
                        // Moved or gone: the sender resends, and looks the owner up again.
                        tracing::debug!(%from, %to, "crossing message dropped: {e}");
                    }
                }
                LinkMsg::Subscribe { region, after } => {
                    let mut subs = self.subscribers.lock();
                    // A region still arriving counts as here: its subscribers follow it from
                    // the source as soon as the epoch moves, often before the region is loaded here.
                    if self.receiving(region) || self.host.holds(region) {
                        if let Some(after) = after {
                            self.replay_after(region, after, &link.tx);
                        }
                        tracing::debug!(target: "freeze", at = crate::unix_us(), %region, ?after, "subscription arrived");
                        let list = subs.entry(region).or_default();
                        // A second subscription on the same link changes nothing.
                        list.retain(|t| !same_link(t, &link.tx));
                        list.push(link.tx.clone());
                    } else {
                        drop(subs);
                        let owner = self.owner_elsewhere(region);
                        link.tx.send(&LinkMsg::NotHere { region, owner });
                    }
                }
                LinkMsg::Unsubscribe { region } => {
                    if let Some(l) = self.subscribers.lock().get_mut(&region) {
                        l.retain(|t| !same_link(t, &link.tx));
                    }
                }
                LinkMsg::FirstTick { id, unix_us, .. } => {
                    let mut st = self.statuses.lock();
                    if let Some(s) = st.iter_mut().find(|s| s.id == id) {
                        s.first_target_tick_unix = Some(unix_us);
                        s.settle_freeze();
                    }
                }
                LinkMsg::Hello { .. }
                | LinkMsg::Update { .. }
                | LinkMsg::NotHere { .. }
                | LinkMsg::ChangeDone { .. }
                | LinkMsg::Error { .. } => {}
            }
        }
    }

    /// Whether a migration is bringing `region` here and has not ended yet.
    fn receiving(&self, region: RegionId) -> bool {
        self.incoming.lock().values().any(|i| i.region == region && i.finished_at.is_none())
    }

    /// Sends a new subscriber the updates after tick `after` that are still kept (called
    /// with the subscribers' lock held, before it joins the live stream).
    fn replay_after(&self, region: RegionId, after: u64, to: &LinkTx) {
        let replay = self.replay.lock();
        let Some(r) = replay.get(&region) else { return };
        let first = r.frames.front().map(|f| f.0);
        if first.is_some_and(|t| t > after + 1) {
            tracing::warn!(%region, after, first, "a subscriber missed updates that are no longer kept");
        }
        for (_, frame) in r.frames.iter().filter(|(t, _)| *t > after) {
            to.send_frame(frame.clone());
        }
    }

    /// Handles a migration message. Returns the migration's id when a pre-copy round has been
    /// applied whose scripts should be prepared before the acknowledgement goes out.
    fn on_migration_msg(&self, region: RegionId, msg: Msg, reply: &LinkTx) -> Option<MigrationId> {
        let to_source = matches!(
            msg,
            Msg::Prepared { .. }
                | Msg::RoundAck { .. }
                | Msg::FreezeAck { .. }
                | Msg::Committed { .. }
                | Msg::Refuse { .. }
        );
        if to_source {
            if let Some(tx) = self.outgoing.lock().get(&msg.id()) {
                let _ = tx.try_send(msg);
            }
            return None;
        }
        if matches!(msg, Msg::Chunk { freeze: Some(_), .. }) && failpoint("target-dies-at-freeze") {
            // Fault injection for the real-process tests: die like kill -9 inside the freeze.
            tracing::error!("failpoint target-dies-at-freeze: aborting the process");
            std::process::abort();
        }
        let key = matches!(msg, Msg::Chunk { freeze: Some(_), .. });
        // From the first dirty round on, the final one can come at any tick boundary: a round
        // is small work (a delta applied; scripts are prepared on a background thread).
        let raise = key || matches!(msg, Msg::Chunk { round: 1.., .. });
        if key {
            tracing::debug!(target: "freeze", at = crate::unix_us(), "target received the final round");
        }
        let now = self.host.now_us();
        let mut incoming = self.incoming.lock();
        if let Msg::Prepare { id, region: r, epoch } = &msg {
            if !incoming.contains_key(id) && r == &region && !self.host.holds(region) {
                incoming.insert(
                    *id,
                    Incoming {
                        target: Target::new(now, *id, region, *epoch),
                        reply: reply.clone(),
                        region,
                        finished_at: None,
                        prepared: Arc::default(),
                        holding_ack: false,
                        loaded: false,
                        boost: None,
                    },
                );
            }
        }
        let id = msg.id();
        let (mut prepare_first, mut frozen) = (false, false);
        if let Some(inc) = incoming.get_mut(&id) {
            if raise && !inc.target.is_finished() {
                inc.boost = Some(crate::boost::FreezeBoost::new());
            }
            inc.reply = reply.clone();
            inc.target.handle_msg(now, msg);
            frozen = matches!(
                inc.target.phase(),
                migrate::TargetPhase::Verified | migrate::TargetPhase::Committing
            );
            prepare_first = inc.target.phase() == migrate::TargetPhase::Receiving
                && inc.target.replica().is_some_and(|r| {
                    r.script_count() > 0 && inc.prepared.lock().generation != Some(r.generation())
                });
        }
        drop(incoming);
        if prepare_first {
            if let Some(inc) = self.incoming.lock().get_mut(&id) {
                inc.holding_ack = true;
            }
            return Some(id);
        }
        self.drive_incoming(id);
        if key {
            tracing::debug!(target: "freeze", at = crate::unix_us(), "target handled it");
        }
        // Bringing the prepared scripts up to this round is real work (instantiating,
        // copying memories): off the link's task, so that the acknowledgement just queued goes
        // out now. After the final round it runs while the directory's compare-and-swap does,
        // and the commit waits for it: then at the normal priority, not behind everything else.
        if let Some(net) = self.me.upgrade() {
            drop(crate::off_thread(!frozen, move || net.prepare_scripts(id)));
        }
        None
    }

    /// Instantiates the replica's scripts ahead of the commit and keeps them in step with
    /// each round, so neither the freeze nor the first tick here has to.
    fn prepare_scripts(&self, id: MigrationId) {
        let Some(sh) = self.host.script_host() else { return };
        let (replica, prepared) = {
            let incoming = self.incoming.lock();
            let Some(inc) = incoming.get(&id) else { return };
            let Some(replica) = inc.target.replica() else { return };
            let Some(mut p) = inc.prepared.try_lock_for(std::time::Duration::from_secs(5)) else { return };
            if (replica.script_count() == 0 && p.scripts.is_none())
                || p.generation.is_some_and(|g| g >= replica.generation())
            {
                return;
            }
            if let (Some(since), Some(scripts)) = (p.generation, p.scripts.as_mut()) {
                // One round's changes: brought in place, under the migrations' lock, rather than
                // copying the whole replica (its every script memory) first. That copy was the
                // largest cost inside the freeze, and held this lock while the commit waited.
                scripts.prepare_from(&sh, replica, Some(since));
                p.generation = Some(replica.generation());
                return;
            }
            // The first preparation instantiates every script: long, so on a copy, off the lock.
            drop(p);
            (replica.clone(), inc.prepared.clone())
        };
        let mut p = prepared.lock();
        if p.generation.is_some_and(|g| g >= replica.generation()) {
            return;
        }
        let since = p.generation;
        p.scripts.get_or_insert_with(Default::default).prepare_from(&sh, &replica, since);
        p.generation = Some(replica.generation());
    }

    fn sweep_incoming(&self) {
        let now = self.host.now_us();
        let ids: Vec<MigrationId> = {
            let mut incoming = self.incoming.lock();
            incoming.retain(|_, i| i.finished_at.is_none_or(|f| now.saturating_sub(f) < KEEP_FINISHED_US));
            for i in incoming.values_mut() {
                i.target.handle_timeout(now);
            }
            incoming.keys().copied().collect()
        };
        for id in ids {
            self.drive_incoming(id);
        }
    }

    /// Sends what an incoming migration wants sent and acts on what happened.
    fn drive_incoming(&self, id: MigrationId) {
        loop {
            let now = self.host.now_us();
            let mut incoming = self.incoming.lock();
            let Some(inc) = incoming.get_mut(&id) else { return };
            while let Some(msg) = (!inc.holding_ack).then(|| inc.target.poll_transmit()).flatten() {
                inc.reply.send(&LinkMsg::Migration { region: inc.region, msg });
            }
            let Some(event) = inc.target.poll_event() else { return };
            let (region, reply) = (inc.region, inc.reply.clone());
            match event {
                TargetEvent::Prepare { .. } => inc.target.prepared(now),
                TargetEvent::Committed { region: state, epoch } => {
                    inc.finished_at = Some(now);
                    let prepared = inc.prepared.clone();
                    drop(incoming);
                    // Prepared instances must match the state exactly: catch up on the last
                    // round here if its preparation has not run yet (waiting for one running).
                    let scripts = {
                        let mut p = prepared.lock();
                        let mut scripts = p.scripts.take();
                        if let (Some(s), Some(sh)) = (scripts.as_mut(), self.host.script_host()) {
                            if p.generation != Some(state.generation()) {
                                s.prepare_from(&sh, &state, p.generation);
                            }
                        }
                        p.generation = Some(state.generation());
                        scripts
                    };
                    self.moved.lock().remove(&region);
                    let hook: crate::FirstTickHook = Box::new(move |unix_us| {
                        reply.send(&LinkMsg::FirstTick { region, id, unix_us });
                    });
                    self.replay.lock().insert(region, Replay::arrived());
                    match self.host.load_prepared(*state, Some(hook), scripts) {
                        Ok(()) => tracing::info!(%region, epoch, "region arrived by live migration"),
                        Err(e) => tracing::error!(%region, "committed region could not be loaded: {e}"),
                    }
                    if let Some(inc) = self.incoming.lock().get_mut(&id) {
                        inc.loaded = true;
                    }
                    let pending = self.pending_inputs.lock().remove(&region).unwrap_or_default();
                    for input in pending {
                        let _ = self.host.send(region, input);
                    }
                    // The first tick here ends the freeze: run it now, on this thread.
                    self.host.tick_if_due(region);
                    if let Some(inc) = self.incoming.lock().get_mut(&id) {
                        inc.boost = None;
                    }
                    continue;
                }
                TargetEvent::Aborted { reason } => {
                    inc.finished_at = Some(now);
                    inc.boost = None;
                    drop(incoming);
                    self.pending_inputs.lock().remove(&region);
                    // Whoever subscribed while it was arriving looks for it elsewhere again.
                    if !self.host.holds(region) {
                        self.replay.lock().remove(&region);
                        for s in self.subscribers.lock().remove(&region).unwrap_or_default() {
                            s.send(&LinkMsg::NotHere { region, owner: None });
                        }
                    }
                    tracing::info!(%region, "incoming migration aborted: {reason}");
                    continue;
                }
                TargetEvent::CasEpoch { region, from, to } => {
                    // The commit point: this host becomes the owner at `to`, unless the source
                    // fenced us out first. Retried until the directory gives a definite answer.
                    drop(incoming);
                    let Some(net) = self.me.upgrade() else { return };
                    tokio::spawn(async move {
                        let me = Placement { host: net.name.clone(), epoch: to };
                        tracing::debug!(target: "freeze", at = crate::unix_us(), "target: compare-and-swap sent");
                        let swapped = net.swap_epoch(region, from, me).await;
                        tracing::debug!(target: "freeze", at = crate::unix_us(), swapped, "target: compare-and-swap answered");
                        if let Some(inc) = net.incoming.lock().get_mut(&id) {
                            inc.target.handle_cas_result(swapped);
                        }
                        net.drive_incoming(id);
                    });
                    continue;
                }
            }
        }
    }

    /// Starts moving `region` from here to the host whose link address is `to`.
    pub async fn migrate(
        &self,
        region: RegionId,
        to: String,
        policy: Policy,
    ) -> Result<MigrationId, NetError> {
        if to == self.name {
            return Err(NetError::ToSelf(region));
        }
        let slot = self.host.slot(region)?;
        let placement = self.directory.get(region).await?.ok_or(NetError::NotInDirectory(region))?;
        if placement.host != self.name {
            return Err(NetError::OwnedElsewhere { region, owner: placement.host, epoch: placement.epoch });
        }
        let peer = self.peer(&to).await?;
        let id = MigrationId(rand::random());
        let now = self.host.now_us();
        {
            let mut m = slot.migration.lock();
            if m.as_ref().is_some_and(|s| !s.is_finished()) {
                return Err(NetError::AlreadyMigrating(region));
            }
            // Full copies are made off the tick thread (run_tick hands them over).
            let policy = Policy { copies_by_caller: true, ..policy };
            let mut source = Source::start(id, region, placement.epoch, policy, now);
            if self.host.durability().is_some() {
                source.release_after_log_flush();
            }
            *m = Some(source);
            *slot.freeze_link.lock() = Some(peer.clone());
        }
        let (tx, rx) = mpsc::channel(MIGRATION_QUEUE);
        self.outgoing.lock().insert(id, tx);
        {
            let mut st = self.statuses.lock();
            if st.len() >= MAX_KEPT_STATUSES {
                st.remove(0);
            }
            st.push(MigrationStatus {
                id,
                region: region.to_string(),
                to: to.clone(),
                phase: "Preparing".into(),
                rounds: 0,
                bytes: 0,
                done: false,
                committed: false,
                freeze_ms: None,
                total_ms: None,
                forced_freeze: false,
                abort_reason: None,
                bytes_per_round: Vec::new(),
                last_source_tick_unix: None,
                first_target_tick_unix: None,
                started_unix: crate::unix_us(),
            });
        }
        let me = self.me.upgrade().expect("net is alive while it runs");
        tokio::spawn(async move { me.run_source(region, to, id, peer, rx).await });
        Ok(id)
    }

    pub fn migration(&self, id: MigrationId) -> Option<MigrationStatus> {
        self.statuses.lock().iter().find(|s| s.id == id).cloned()
    }

    pub fn migrations(&self) -> Vec<MigrationStatus> {
        self.statuses.lock().clone()
    }

    /// Waits until a migration started here has an outcome and, when committed, the target's
    /// first tick has been reported (bounded by `limit`).
    pub async fn wait(&self, id: MigrationId, limit: Duration) -> Option<MigrationStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.migration(id)?;
            if s.done && (!s.committed || s.freeze_ms.is_some()) {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn run_source(
        self: Arc<Self>,
        region: RegionId,
        to: String,
        id: MigrationId,
        peer: LinkTx,
        mut rx: mpsc::Receiver<Msg>,
    ) {
        let Ok(slot) = self.host.slot(region) else { return };
        let boundary = slot.boundary.clone();
        let mut finished = false;
        while !finished {
            let now = self.host.now_us();
            let (msgs, events, timeout, report) = {
                let mut m = slot.migration.lock();
                let Some(s) = m.as_mut() else { return };
                // Rounds are cut by the tick thread right after each tick (see run_tick).
                let msgs: Vec<Msg> = std::iter::from_fn(|| s.poll_transmit()).collect();
                let events: Vec<SourceEvent> = std::iter::from_fn(|| s.poll_event()).collect();
                (msgs, events, s.poll_timeout(), s.report())
            };
            let sent = !msgs.is_empty();
            for msg in msgs {
                if matches!(msg, Msg::Chunk { freeze: Some(_), .. }) {
                    tracing::debug!(target: "freeze", at = crate::unix_us(), "source: final round handed to the link");
                }
                peer.send(&LinkMsg::Migration { region, msg });
            }
            if sent && !events.is_empty() {
                // The link's writer was just woken onto this worker's next-task slot, where no
                // other worker can take it: let it write (the release, in the freeze) before the
                // events' work runs.
                tokio::task::yield_now().await;
            }
            self.update_status(id, &report, &slot);
            let acted = !events.is_empty();
            for event in events {
                finished |= self.on_source_event(region, &to, id, &slot, event).await;
            }
            if finished {
                // What the last event queued (an Abort) goes out now, not at the next timeout.
                if let Some(s) = slot.migration.lock().as_mut() {
                    for msg in std::iter::from_fn(|| s.poll_transmit()) {
                        peer.send(&LinkMsg::Migration { region, msg });
                    }
                }
                break;
            }
            if acted {
                continue;
            }
            let sleep =
                timeout.map_or(Duration::from_millis(100), |t| Duration::from_micros(t.saturating_sub(now)));
            tokio::select! {
                Some(msg) = rx.recv() => {
                    let now = self.host.now_us();
                    if let Some(s) = slot.migration.lock().as_mut() {
                        s.handle_msg(now, msg);
                    }
                }
                _ = boundary.notified() => {}
                _ = tokio::time::sleep(sleep) => {
                    let now = self.host.now_us();
                    if let Some(s) = slot.migration.lock().as_mut() {
                        s.handle_timeout(now);
                    }
                }
            }
        }
        // Keep the finished machine a while: late messages of this migration find it and are ignored.
        let deadline = tokio::time::Instant::now() + Duration::from_micros(KEEP_FINISHED_US);
        let mut source = slot.migration.lock().take();
        slot.freeze_link.lock().take();
        slot.freeze_boost.lock().take();
        if self.host.slot(region).ok().is_none_or(|live| !Arc::ptr_eq(&live, &slot)) {
            // The region left this host: free it, its script instances included, now rather
            // than after the wait below (a few thousand instances are hundreds of MiB of pooled
            // memory, which the next incoming migration would otherwise find taken), and on a
            // lower-priority thread: returning instances clears their memory, and dropping the
            // region's rows and physics took 1.5-5.5 ms in `bench migrate`, just as the gateway
            // fans out the hand-over's two closely spaced ticks; ticks, the gateway and the new
            // owner's first ticks go first. (The instances are taken out in case something else
            // still holds the slot.)
            let departed = std::mem::take(&mut *slot.scripts.lock());
            drop(crate::background(move || drop((departed, slot))));
        } else {
            drop(slot);
        }
        while let Some(s) = source.as_mut() {
            let now = self.host.now_us();
            for msg in std::iter::from_fn(|| s.poll_transmit()) {
                peer.send(&LinkMsg::Migration { region, msg });
            }
            let sleep = s
                .poll_timeout()
                .map_or(Duration::from_millis(100), |t| Duration::from_micros(t.saturating_sub(now)));
            tokio::select! {
                m = rx.recv() => match m {
                    Some(msg) => s.handle_msg(self.host.now_us(), msg),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => s.handle_timeout(self.host.now_us()),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.outgoing.lock().remove(&id);
    }

    fn update_status(&self, id: MigrationId, report: &Report, slot: &crate::RegionSlot) {
        let mut st = self.statuses.lock();
        let Some(s) = st.iter_mut().find(|s| s.id == id) else { return };
        s.phase = format!("{:?}", report.phase);
        s.rounds = report.rounds;
        s.bytes = report.total_bytes;
        s.bytes_per_round = report.bytes_per_round.clone();
        s.forced_freeze = report.forced_freeze;
        s.abort_reason = report.abort_reason.clone();
        if report.freeze_started_us.is_some() && s.last_source_tick_unix.is_none() {
            s.last_source_tick_unix = Some(slot.last_tick_unix.load(std::sync::atomic::Ordering::SeqCst));
            s.settle_freeze();
        }
    }

    /// Acts on what the source machine decided; returns whether the migration is over.
    async fn on_source_event(
        &self,
        region: RegionId,
        to: &str,
        id: MigrationId,
        slot: &crate::RegionSlot,
        event: SourceEvent,
    ) -> bool {
        match event {
            SourceEvent::FlushLog => {
                // The region is frozen: its last records are queued. They must be in the store
                // before the target owns the region, so its log continues from them: only then
                // is the region released to the target.
                if let Some(d) = self.host.durability().cloned() {
                    let _ = tokio::task::spawn_blocking(move || d.flush_log()).await;
                }
                let now = self.host.now_us();
                if let Some(s) = slot.migration.lock().as_mut() {
                    s.log_flushed(now);
                }
                false
            }
            SourceEvent::Fence { from, to: epoch, .. } => {
                // The target may be taking the region: only the directory can say. Bumping the
                // epoch with this host still the owner makes the target's swap fail.
                let me = Placement { host: self.name.clone(), epoch };
                let result = if self.swap_epoch(region, from, me).await {
                    FenceResult::Kept
                } else {
                    match self.definite_placement(region).await {
                        Some(p) if p.host == to && p.epoch == from + 1 => FenceResult::TargetOwns,
                        _ => FenceResult::Lost,
                    }
                };
                tracing::warn!(%region, to, ?result, "frozen migration settled by a fence");
                let now = self.host.now_us();
                if let Some(s) = slot.migration.lock().as_mut() {
                    s.handle_fence_result(now, result);
                }
                false
            }
            SourceEvent::Committed { report, buffered } => {
                // Moved first: an input that finds the region released is forwarded, not dropped.
                self.moved.lock().insert(region, to.to_string());
                let queued = self.host.release(region).unwrap_or_default();
                if let Some(tx) = self.peers.lock().get(to).cloned() {
                    for input in queued.into_iter().chain(buffered) {
                        tx.send(&LinkMsg::Input { region, input });
                    }
                }
                self.replay.lock().remove(&region);
                if let Some(subs) = self.subscribers.lock().remove(&region) {
                    for s in subs {
                        s.send(&LinkMsg::NotHere { region, owner: Some(to.to_string()) });
                    }
                }
                tracing::debug!(target: "freeze", at = crate::unix_us(), "source: committed, subscribers told");
                self.finish_status(id, &report, true);
                tracing::info!(%region, to, rounds = report.rounds, bytes = report.total_bytes, "region migrated");
                metrics::counter!("terrane_migrations_total", "outcome" => "committed").increment(1);
                if let Some(f) = report.freeze_us() {
                    metrics::histogram!("terrane_migration_freeze_seconds").record(f as f64 / 1e6);
                }
                true
            }
            SourceEvent::Aborted { report, buffered } => {
                let _ = self.host.requeue(region, buffered);
                self.finish_status(id, &report, false);
                // An abort ends the freeze at the source's next tick.
                tracing::warn!(%region, to, reason = ?report.abort_reason, "migration aborted; the region stays here");
                metrics::counter!("terrane_migrations_total", "outcome" => "aborted").increment(1);
                true
            }
            SourceEvent::Fenced { report } => {
                let _ = self.host.unload(region);
                self.finish_status(id, &report, false);
                tracing::error!(%region, "fenced: another host owns this region now");
                true
            }
        }
    }

    fn finish_status(&self, id: MigrationId, report: &Report, committed: bool) {
        let mut st = self.statuses.lock();
        let Some(s) = st.iter_mut().find(|s| s.id == id) else { return };
        s.done = true;
        s.committed = committed;
        s.phase = format!("{:?}", report.phase);
        s.rounds = report.rounds;
        s.bytes = report.total_bytes;
        s.bytes_per_round = report.bytes_per_round.clone();
        s.abort_reason = report.abort_reason.clone();
        s.total_ms = Some(crate::unix_us().saturating_sub(s.started_unix) as f64 / 1000.0);
    }

    /// A compare-and-swap of a frozen region's epoch (the target's commit, or the source's
    /// fence). Retries until the directory gives a definite answer: acting without one could
    /// leave two owners. After a failed attempt (whose swap may have happened anyway) a
    /// refusal is checked against what the directory holds.
    async fn swap_epoch(&self, region: RegionId, from: u64, new: Placement) -> bool {
        let mut backoff = Duration::from_millis(5);
        let mut failed_before = false;
        loop {
            match self.directory.compare_and_swap(region, Some(from), new.clone()).await {
                Ok(true) => return true,
                Ok(false) if !failed_before => return false,
                Ok(false) => return self.definite_placement(region).await.is_some_and(|p| p == new),
                Err(e) => {
                    failed_before = true;
                    tracing::error!(%region, "directory compare-and-swap failed, region stays frozen: {e}");
                    if let Ok(Some(p)) = self.directory.get(region).await {
                        if p == new {
                            return true;
                        }
                        if p.epoch != from {
                            return false;
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The region's placement, asking the directory until it answers (bounded backoff); `None`
    /// when it has no placement for the region.
    async fn definite_placement(&self, region: RegionId) -> Option<Placement> {
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.directory.get(region).await {
                Ok(p) => return p,
                Err(e) => tracing::error!(%region, "directory lookup failed, region stays frozen: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Named fault-injection points, enabled by listing them in `TERRANE_FAILPOINTS` (comma
/// separated). Only tests set it.
fn failpoint(name: &str) -> bool {
    std::env::var("TERRANE_FAILPOINTS").is_ok_and(|v| v.split(',').any(|p| p.trim() == name))
}

fn same_link(a: &LinkTx, b: &LinkTx) -> bool {
    a.peer == b.peer
}
