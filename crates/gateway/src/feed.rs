//! Region feeds: one subscription per region shared by every client of this gateway, one link
//! per host shared by every region on it, and a mirror of each region's entities built from
//! its update stream (late joiners are served from it).
//!
//! A feed follows its region when it moves: a host answering `NotHere { owner }` makes the feed
//! re-subscribe at the new owner; when the owner dies, the directory's watch tells of the host
//! that took the region over the moment it does (lookups with backoff remain the fallback when
//! there is no watch). The sessions watching it never notice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use directory::{Change, Directory};
use link::{LinkMsg, LinkTx, Role};
use parking_lot::{Mutex, RwLock};
use proto::{RegionInfo, ServerMsg};
use tokio::sync::mpsc;
use world::{Entity, EntityChange, EntityId, Input, RegionId, ScriptStopped, Terrain, TickOutput, Vec3};

use crate::limits::*;

/// What a feed (or another session) tells a session.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// One tick of a watched region; the feed's mirror already includes it.
    Tick { region: RegionId, output: Arc<TickOutput> },
    /// Chat heard by the session's avatar.
    Chat(ServerMsg),
    /// A message for this session alone (a script of its agent's stopped), sent as is.
    Notice(ServerMsg),
    /// The answer to one of the session's changes (`ack` or `refused`).
    Reply(ServerMsg),
}

/// A session's mailbox as feeds see it.
#[derive(Clone, Debug)]
pub(crate) struct Mailbox {
    pub session: u64,
    pub tx: mpsc::Sender<SessionEvent>,
    /// Set when an event could not be queued: the session is too far behind and must go.
    pub overflow: Arc<AtomicBool>,
}

impl Mailbox {
    /// Queues an event without waiting; false if the session is gone.
    pub fn post(&self, event: SessionEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.store(true, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A region's entities as the gateway last heard of them.
#[derive(Debug, Default)]
pub struct Mirror {
    /// The last tick applied (0 before the first).
    pub tick: u64,
    pub entities: rustc_hash::FxHashMap<EntityId, Entity>,
}

impl Mirror {
    /// Applies one tick's output: new and changed rows, motion, removals.
    pub fn apply(&mut self, out: &TickOutput) {
        self.tick = out.tick;
        for change in &out.changes {
            match change {
                EntityChange::Full(e) => {
                    self.entities.insert(e.id, e.clone());
                }
                EntityChange::Motion { id, pos, rot, vel } => {
                    if let Some(e) = self.entities.get_mut(id) {
                        e.pos = *pos;
                        e.rot = *rot;
                        e.vel = *vel;
                    }
                }
            }
        }
        for id in &out.removed {
            self.entities.remove(id);
        }
    }

    /// An entity's region-local position; a linked child's is composed with its root's.
    pub fn local_pos(&self, id: EntityId) -> Option<Vec3> {
        let e = self.entities.get(&id)?;
        match e.parent.and_then(|p| self.entities.get(&p)) {
            Some(root) => Some(root.pos + root.rot * e.pos),
            None => Some(e.pos),
        }
    }
}

pub(crate) type SharedMirror = Arc<RwLock<Mirror>>;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("region {0} is not in the directory")]
    NotInDirectory(RegionId),
    #[error("directory: {0}")]
    Directory(#[from] directory::DirectoryError),
    #[error("cannot reach host {host}: {error}")]
    Unreachable { host: String, error: String },
    #[error("this gateway already streams MAX_FEEDS ({MAX_FEEDS}) regions")]
    TooManyFeeds,
    #[error("the link to host {0} is full or closed; the input was dropped")]
    LinkBusy(String),
    #[error("this gateway has MAX_PENDING_CHANGES_TOTAL changes waiting for their hosts")]
    TooManyChanges,
}

struct Feed {
    mirror: SharedMirror,
    /// The owner the subscription was sent to; `None` while looking for it.
    host: Option<String>,
    last_update: Option<Instant>,
    resubscribing: bool,
    /// Set when the owner said `NotHere`, until the next owner's first update (which the
    /// `freeze` debug log stamps: the gateway's part of a hand-over).
    followed: bool,
    /// Set when re-subscribing gave up: the region is unavailable.
    lost: bool,
    watchers: Vec<Mailbox>,
}

/// Counters for [`crate::GatewayStats`].
#[derive(Debug, Default)]
pub(crate) struct FeedCounters {
    pub updates_in: AtomicU64,
    pub resubscribes: AtomicU64,
    pub inputs_forwarded: AtomicU64,
    pub inputs_dropped: AtomicU64,
    /// Script errors told to their owners' sessions.
    pub script_errors_delivered: AtomicU64,
}

/// Where sessions are, by agent id: feeds tell owners of scripts that stopped.
pub(crate) type Owners = Arc<Mutex<HashMap<EntityId, crate::Presence>>>;

pub(crate) struct Feeds {
    me: Weak<Feeds>,
    directory: Arc<dyn Directory>,
    /// This gateway's name in link hellos.
    name: String,
    world_seed: u32,
    feeds: Mutex<HashMap<RegionId, Feed>>,
    links: Mutex<HashMap<String, LinkTx>>,
    /// Held while connecting, so that concurrent first uses of a host share one link.
    connecting: tokio::sync::Mutex<()>,
    absent: Mutex<HashMap<RegionId, Instant>>,
    terrain: Mutex<HashMap<RegionId, Arc<RegionInfo>>>,
    owners: Owners,
    pub counters: FeedCounters,
    /// Changes forwarded to hosts, waiting for their outcome.
    pub(crate) changes: crate::changes::Changes,
}

impl Feeds {
    /// Also follows the directory's watch when called inside a tokio runtime.
    pub fn new(directory: Arc<dyn Directory>, name: String, world_seed: u32, owners: Owners) -> Arc<Feeds> {
        let feeds = Feeds::unwatched(directory, name, world_seed, owners);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(follow_directory(Arc::downgrade(&feeds)));
        }
        feeds
    }

    fn unwatched(directory: Arc<dyn Directory>, name: String, world_seed: u32, owners: Owners) -> Arc<Feeds> {
        Arc::new_cyclic(|me| Feeds {
            me: me.clone(),
            directory,
            name,
            world_seed,
            feeds: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
            absent: Mutex::new(HashMap::new()),
            terrain: Mutex::new(HashMap::new()),
            owners,
            counters: FeedCounters::default(),
            changes: crate::changes::Changes::new(),
        })
    }

    pub fn feed_count(&self) -> usize {
        self.feeds.lock().len()
    }

    pub fn link_count(&self) -> usize {
        self.links.lock().len()
    }

    /// Subscribes every region the directory knows, so that mirrors start as early as
    /// possible: the link has no snapshot on subscribe, and an object that never changes is
    /// only known to a gateway that was listening when it was created.
    pub async fn subscribe_all(&self) -> Result<usize, FeedError> {
        let regions = self.directory.list().await?;
        let mut n = 0;
        for (region, placement) in regions {
            if self.create(region).is_some() {
                self.subscribe_at(region, placement.host).await;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Starts delivering `region`'s ticks to `mailbox` and returns the region's mirror.
    pub async fn watch(&self, region: RegionId, mailbox: Mailbox) -> Result<SharedMirror, FeedError> {
        if let Some(feed) = self.feeds.lock().get_mut(&region) {
            feed.watchers.retain(|w| w.session != mailbox.session);
            feed.watchers.push(mailbox);
            return Ok(feed.mirror.clone());
        }
        if self
            .absent
            .lock()
            .get(&region)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(ABSENT_REGION_TTL_MS))
        {
            return Err(FeedError::NotInDirectory(region));
        }
        let placement = match self.directory.get(region).await? {
            Some(p) => p,
            None => {
                self.absent.lock().insert(region, Instant::now());
                return Err(FeedError::NotInDirectory(region));
            }
        };
        self.absent.lock().remove(&region);
        let created = self.create(region);
        let mirror = {
            let mut feeds = self.feeds.lock();
            let feed = feeds.get_mut(&region).ok_or(FeedError::TooManyFeeds)?;
            feed.watchers.retain(|w| w.session != mailbox.session);
            feed.watchers.push(mailbox);
            feed.mirror.clone()
        };
        if created.is_some() {
            self.subscribe_at(region, placement.host).await;
        }
        Ok(mirror)
    }

    /// Stops delivering `region`'s ticks to `session`. The subscription itself stays: its
    /// mirror is what the next client to come near the region is served from.
    pub fn unwatch(&self, region: RegionId, session: u64) {
        if let Some(feed) = self.feeds.lock().get_mut(&region) {
            feed.watchers.retain(|w| w.session != session);
        }
    }

    /// When the region last sent an update, and whether it is given up.
    pub fn health(&self, region: RegionId) -> Option<(Option<Instant>, bool)> {
        self.feeds.lock().get(&region).map(|f| (f.last_update, f.lost))
    }

    /// Sends a client input to whichever host owns the region now. A host that lost the
    /// region forwards it on, so an input sent during a migration is still applied once.
    pub async fn send_input(&self, region: RegionId, input: Input) -> Result<(), FeedError> {
        let known = self.feeds.lock().get(&region).and_then(|f| f.host.clone());
        let host = match known {
            Some(h) => h,
            None => self.directory.get(region).await?.ok_or(FeedError::NotInDirectory(region))?.host,
        };
        let tx = self.link(&host).await?;
        if tx.send(&LinkMsg::Input { region, input }) {
            self.counters.inputs_forwarded.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            self.counters.inputs_dropped.fetch_add(1, Ordering::Relaxed);
            Err(FeedError::LinkBusy(host))
        }
    }

    /// Sends a change made on purpose to the region's owner; the receiver gets its outcome.
    /// The input is built from the gateway's request number (a create's tag).
    pub(crate) async fn send_change(
        &self,
        region: RegionId,
        input: Box<dyn FnOnce(u64) -> Input + Send>,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<Result<link::ChangeAck, link::ChangeFailed>>), FeedError>
    {
        let known = self.feeds.lock().get(&region).and_then(|f| f.host.clone());
        let host = match known {
            Some(h) => h,
            None => self.directory.get(region).await?.ok_or(FeedError::NotInDirectory(region))?.host,
        };
        let tx = self.link(&host).await?;
        let (request, rx) = self.changes.register(&host).ok_or(FeedError::TooManyChanges)?;
        if tx.send(&LinkMsg::Change { region, request, input: input(request) }) {
            Ok((request, rx))
        } else {
            self.changes.forget(request);
            Err(FeedError::LinkBusy(host))
        }
    }

    /// The region's ground for a region info. The link carries no terrain, so it is generated
    /// from the world seed exactly as the hosts generate it (terrain edits are not seen).
    pub fn region_info(&self, region: RegionId) -> Option<Arc<RegionInfo>> {
        if let Some(info) = self.terrain.lock().get(&region) {
            return Some(info.clone());
        }
        let terrain = Terrain::generate(self.world_seed, region);
        match RegionInfo::from_terrain(region, &terrain) {
            Ok(info) => {
                let info = Arc::new(info);
                self.terrain.lock().insert(region, info.clone());
                Some(info)
            }
            Err(e) => {
                tracing::error!(%region, "cannot pack the region's terrain: {e}");
                None
            }
        }
    }

    /// Inserts an empty feed; `Some` if this call created it.
    fn create(&self, region: RegionId) -> Option<()> {
        let mut feeds = self.feeds.lock();
        if feeds.contains_key(&region) || feeds.len() >= MAX_FEEDS {
            return None;
        }
        feeds.insert(
            region,
            Feed {
                mirror: Arc::new(RwLock::new(Mirror::default())),
                host: None,
                last_update: None,
                resubscribing: false,
                followed: false,
                lost: false,
                watchers: Vec::new(),
            },
        );
        Some(())
    }

    /// The subscription message for `region`: it names the last tick the mirror holds, so the
    /// host replays what came after (the ticks a moved region ran before we found it).
    fn subscription(&self, region: RegionId) -> LinkMsg {
        let after = self.feeds.lock().get(&region).map(|f| f.mirror.read().tick).filter(|&t| t != 0);
        LinkMsg::Subscribe { region, after }
    }

    /// Subscribes the feed at `host`; if that fails, keeps looking for the owner.
    async fn subscribe_at(&self, region: RegionId, host: String) {
        match self.link(&host).await {
            Ok(tx) => {
                // The owner is set before asking, so that the first (replayed) updates count.
                if let Some(feed) = self.feeds.lock().get_mut(&region) {
                    feed.host = Some(host);
                }
                if !tx.send(&self.subscription(region)) {
                    self.resubscribe(region);
                }
                tracing::debug!(target: "freeze", at = link::unix_us(), %region, "gateway: subscribed");
            }
            Err(e) => {
                tracing::warn!(%region, "cannot subscribe: {e}");
                self.resubscribe(region);
            }
        }
    }

    /// The directory says `host` owns `region` now. A feed whose owner is gone (its link lost,
    /// as when the host died and the region failed over) subscribes there at once instead of
    /// waiting for its next lookup. A feed whose owner is still linked is left alone: that
    /// host answers `NotHere` on the same link after its last update, so nothing is missed.
    async fn placed(&self, region: RegionId, host: String) {
        self.absent.lock().remove(&region);
        let Some(current) = self.feeds.lock().get(&region).map(|f| f.host.clone()) else { return };
        if let Some(h) = &current {
            let linked = self.links.lock().get(h).is_some_and(|t| !t.is_closed());
            if *h == host || linked {
                return;
            }
        }
        {
            let mut feeds = self.feeds.lock();
            let Some(feed) = feeds.get_mut(&region) else { return };
            if feed.host != current {
                return; // someone else followed it meanwhile
            }
            // Claimed before subscribing: a running re-subscription then stops.
            feed.host = Some(host.clone());
        }
        self.counters.resubscribes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%region, to = %host, "the directory moved the region; following it");
        match self.link(&host).await {
            Ok(tx) if tx.send(&self.subscription(region)) => {}
            Ok(_) => self.resubscribe(region),
            Err(e) => {
                tracing::warn!(%region, "cannot subscribe at the new owner: {e}");
                self.resubscribe(region);
            }
        }
    }

    /// Looks the owner up in the directory (with backoff) until a subscription is sent.
    fn resubscribe(&self, region: RegionId) {
        {
            let mut feeds = self.feeds.lock();
            let Some(feed) = feeds.get_mut(&region) else { return };
            feed.host = None;
            if feed.resubscribing {
                return;
            }
            feed.resubscribing = true;
        }
        self.counters.resubscribes.fetch_add(1, Ordering::Relaxed);
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(RESUBSCRIBE_FIRST_MS);
            for _ in 0..RESUBSCRIBE_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(RESUBSCRIBE_MAX_MS));
                let Some(feeds) = me.upgrade() else { return };
                if feeds.feeds.lock().get(&region).is_some_and(|f| f.host.is_some()) {
                    // The directory's watch already subscribed it at its new owner.
                    if let Some(feed) = feeds.feeds.lock().get_mut(&region) {
                        feed.resubscribing = false;
                    }
                    return;
                }
                let host = match feeds.directory.get(region).await {
                    Ok(Some(p)) => p.host,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(%region, "directory lookup failed while re-subscribing: {e}");
                        continue;
                    }
                };
                let Ok(tx) = feeds.link(&host).await else { continue };
                if let Some(feed) = feeds.feeds.lock().get_mut(&region) {
                    feed.host = Some(host);
                }
                if tx.send(&feeds.subscription(region)) {
                    if let Some(feed) = feeds.feeds.lock().get_mut(&region) {
                        feed.resubscribing = false;
                    }
                    return;
                }
                let mut all = feeds.feeds.lock();
                if let Some(feed) = all.get_mut(&region) {
                    feed.host = None;
                }
            }
            if let Some(feeds) = me.upgrade() {
                if let Some(feed) = feeds.feeds.lock().get_mut(&region) {
                    feed.resubscribing = false;
                    feed.lost = true;
                }
                tracing::error!(%region, "gave up re-subscribing the region");
            }
        });
    }

    /// The shared link to a host, connecting it on first use.
    ///
    /// Boxed with an explicit `Send`: the link's reader follows moved regions, which
    /// subscribes through here again, and the compiler cannot infer `Send` through that cycle.
    fn link<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<LinkTx, FeedError>> + Send + 'a>> {
        Box::pin(self.connect_link(host))
    }

    async fn connect_link(&self, host: &str) -> Result<LinkTx, FeedError> {
        let open = || self.links.lock().get(host).filter(|t| !t.is_closed()).cloned();
        if let Some(tx) = open() {
            return Ok(tx);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(tx) = open() {
            return Ok(tx);
        }
        let link = link::connect(host, Role::Gateway, &self.name)
            .await
            .map_err(|e| FeedError::Unreachable { host: host.to_string(), error: e.to_string() })?;
        let tx = link.tx.clone();
        self.links.lock().insert(host.to_string(), tx.clone());
        let (me, host, mut rx) = (self.me.clone(), host.to_string(), link.rx);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let Some(feeds) = me.upgrade() else { return };
                match msg {
                    LinkMsg::Update { region, output } => feeds.on_update(&host, region, output),
                    // Following the region may mean connecting to another host: not on this
                    // reader, which carries the other regions of this host meanwhile.
                    LinkMsg::NotHere { region, owner } => {
                        tracing::debug!(target: "freeze", at = link::unix_us(), %region, "gateway: not here");
                        let host = host.clone();
                        tokio::spawn(async move { feeds.on_not_here(&host, region, owner).await });
                    }
                    LinkMsg::Error { message } => tracing::warn!(host, "host says: {message}"),
                    LinkMsg::ChangeDone { request, result } => feeds.changes.on_done(request, result),
                    _ => {}
                }
            }
            if let Some(feeds) = me.upgrade() {
                feeds.on_link_lost(&host);
            }
        });
        Ok(tx)
    }

    fn on_update(&self, host: &str, region: RegionId, mut output: TickOutput) {
        self.counters.updates_in.fetch_add(1, Ordering::Relaxed);
        let mut feeds = self.feeds.lock();
        let Some(feed) = feeds.get_mut(&region) else { return };
        // Only the owner we subscribed at speaks for the region; a late frame from a previous
        // owner, or a tick seen twice, would step the mirror back.
        if feed.host.as_deref() != Some(host) {
            return;
        }
        {
            let mut mirror = feed.mirror.write();
            if mirror.tick != 0 && output.tick <= mirror.tick {
                return;
            }
            if feed.followed {
                feed.followed = false;
                tracing::debug!(target: "freeze", at = link::unix_us(), %region, tick = output.tick, "gateway: first update from the new owner");
            }
            if mirror.tick != 0 && output.tick > mirror.tick + 1 {
                tracing::debug!(%region, host, after = mirror.tick, tick = output.tick, "ticks missed");
            }
            mirror.apply(&output);
        }
        if let Some(gap) = feed.last_update.map(|t| t.elapsed()).filter(|g| g.as_millis() > 60) {
            tracing::debug!(target: "freeze", %region, host, gap_ms = gap.as_millis() as u64, tick = output.tick, "update gap at the gateway");
        }
        feed.last_update = Some(Instant::now());
        feed.lost = false;
        let stopped = std::mem::take(&mut output.script_errors);
        let output = Arc::new(output);
        feed.watchers.retain(|w| w.post(SessionEvent::Tick { region, output: output.clone() }));
        drop(feeds);
        if !stopped.is_empty() {
            self.tell_owners(region, stopped);
        }
    }

    /// Tells the owners of scripts that stopped, if they have a session here (watching the
    /// region or not). The region reports each stop once, so each owner hears of it once.
    fn tell_owners(&self, region: RegionId, stopped: Vec<ScriptStopped>) {
        let owners = self.owners.lock();
        for s in stopped {
            let Some(p) = owners.get(&EntityId(s.owner)).filter(|_| s.owner != 0) else { continue };
            let msg = ServerMsg::ScriptError {
                object: s.object,
                script: s.script.0,
                region,
                kind: s.kind,
                message: s.message,
            };
            if p.mailbox.post(SessionEvent::Notice(msg)) {
                self.counters.script_errors_delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn on_not_here(&self, host: &str, region: RegionId, owner: Option<String>) {
        {
            let mut feeds = self.feeds.lock();
            let Some(feed) = feeds.get_mut(&region) else { return };
            if feed.host.as_deref() != Some(host) {
                return;
            }
            feed.host = None;
            feed.followed = true;
        }
        tracing::debug!(%region, from = host, to = ?owner, "region moved; following it");
        match owner {
            Some(owner) if owner != host => {
                self.counters.resubscribes.fetch_add(1, Ordering::Relaxed);
                self.subscribe_at(region, owner).await;
            }
            // The new owner may not have loaded it yet: ask the directory again shortly.
            _ => self.resubscribe(region),
        }
    }

    fn on_link_lost(&self, host: &str) {
        tracing::warn!(host, "link to host lost; re-subscribing its regions");
        self.links.lock().remove(host);
        self.changes.fail_host(host);
        let orphans: Vec<RegionId> = self
            .feeds
            .lock()
            .iter()
            .filter(|(_, f)| f.host.as_deref() == Some(host))
            .map(|(r, _)| *r)
            .collect();
        for region in orphans {
            self.resubscribe(region);
        }
    }
}

/// How long the gateway goes without a directory watch before it tries again (meanwhile feeds
/// find moved regions by `NotHere` and lookups with backoff).
const REWATCH_AFTER: Duration = Duration::from_secs(10);
/// Bound on one wait for a change, so a dropped gateway ends the task.
const WATCH_WAIT: Duration = Duration::from_secs(1);

/// Follows the directory's changes for `feeds` until they are dropped.
async fn follow_directory(me: Weak<Feeds>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let Some(feeds) = me.upgrade() else { return };
        let watch = feeds.directory.watch().await;
        drop(feeds);
        match watch {
            Ok(mut rx) => loop {
                let next = tokio::time::timeout(WATCH_WAIT, rx.recv()).await;
                let Some(feeds) = me.upgrade() else { return };
                match next {
                    Err(_) => {}
                    Ok(Ok(Change::Region { region, placement: Some(p) })) => {
                        feeds.placed(region, p.host).await
                    }
                    Ok(Ok(Change::Resync)) | Ok(Err(RecvError::Lagged(_))) => {
                        match feeds.directory.list().await {
                            Ok(list) => {
                                for (region, p) in list {
                                    feeds.placed(region, p.host).await;
                                }
                            }
                            Err(e) => tracing::debug!("directory unreachable after a resync: {e}"),
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Closed)) => {
                        tracing::warn!("the directory watch ended: regions are followed by lookups");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!("no directory watch (regions are followed by lookups): {e}"),
        }
        tokio::time::sleep(REWATCH_AFTER).await;
    }
}
