//! One client's view of the world, without I/O: which entities it has been sent, which changed
//! since, and the next updates to send, nearest first, within draw distance and a byte budget.
//!
//! The view keeps only ids; the entities themselves are read from the feeds' mirrors when an
//! update is built, so a change held back by the budget is sent later as the latest state.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;

use proto::limits::{MAX_CHANGES_PER_UPDATE, MAX_REMOVED_PER_UPDATE};
use proto::{Encoding, EntityUpdate, EntityView, SeqCounter, Update};
use world::limits::REGION_SIZE;
use world::{EntityId, RegionId, TickOutput, Vec3};

use crate::feed::Mirror;
use crate::limits::{ESTIMATED_FULL_BYTES, ESTIMATED_MOTION_BYTES, JSON_SIZE_FACTOR};

/// A client's interest set and update numbering.
#[derive(Debug)]
pub struct View {
    agent: EntityId,
    draw_distance: f32,
    /// The region the avatar is in, and its region-local position.
    home: RegionId,
    pos: Vec3,
    /// Entities the client holds, with the region whose frame it holds them in.
    known: HashMap<EntityId, RegionId>,
    /// Changed since last sent, per region; `true` when the client needs the whole row.
    dirty: BTreeMap<RegionId, HashMap<EntityId, bool>>,
    /// The last tick's changes of a region with nothing held back: the common case, kept as
    /// a list (no hashing) until the next flush sends them or moves what it could not send
    /// into `dirty`.
    fresh: Option<(RegionId, Vec<(EntityId, bool)>)>,
    /// Removals to tell, per region.
    removals: BTreeMap<RegionId, Vec<EntityId>>,
    seq: SeqCounter,
}

impl View {
    /// A view for `agent`, about to appear at `pos` in `home`.
    pub fn new(agent: EntityId, home: RegionId, pos: Vec3, draw_distance: f32) -> View {
        View {
            agent,
            draw_distance,
            home,
            pos,
            known: HashMap::default(),
            dirty: BTreeMap::new(),
            fresh: None,
            removals: BTreeMap::new(),
            seq: SeqCounter::new(),
        }
    }

    pub fn home(&self) -> RegionId {
        self.home
    }

    /// The avatar's region-local position in its home region.
    pub fn pos(&self) -> Vec3 {
        self.pos
    }

    /// Whether the client holds this entity (it can touch or sit on it).
    pub fn knows(&self, id: EntityId) -> bool {
        self.known.contains_key(&id)
    }

    /// The region whose frame the client holds an entity in.
    pub fn region_of(&self, id: EntityId) -> Option<RegionId> {
        self.known.get(&id).copied()
    }

    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// Moves the fresh changes of a region other than `keep` into its dirty set.
    fn spill_fresh(&mut self, keep: Option<RegionId>) {
        if self.fresh.as_ref().is_some_and(|(r, _)| Some(*r) != keep) {
            if let Some((region, ids)) = self.fresh.take() {
                let dirty = self.dirty.entry(region).or_default();
                for (id, full) in ids {
                    *dirty.entry(id).or_insert(false) |= full;
                }
            }
        }
    }

    /// Whether changes are waiting for budget.
    pub fn has_backlog(&self) -> bool {
        self.fresh.is_some()
            || self.dirty.values().any(|d| !d.is_empty())
            || self.removals.values().any(|r| !r.is_empty())
    }

    /// Regions held back by the budget.
    pub fn backlog_regions(&self) -> Vec<RegionId> {
        let dirty = self.dirty.iter().filter(|(_, d)| !d.is_empty()).map(|(r, _)| *r);
        let removed = self.removals.iter().filter(|(_, d)| !d.is_empty()).map(|(r, _)| *r);
        let fresh = self.fresh.as_ref().map(|(r, _)| *r);
        dirty.chain(removed).chain(fresh).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Position of something in `region` relative to the avatar, in metres.
    pub fn relative(&self, region: RegionId, local: Vec3) -> Vec3 {
        let dx = (i32::from(region.x) - i32::from(self.home.x)) as f32 * REGION_SIZE;
        let dy = (i32::from(region.y) - i32::from(self.home.y)) as f32 * REGION_SIZE;
        Vec3::new(dx + local.x, dy + local.y, local.z) - self.pos
    }

    /// The regions whose square comes within draw distance of the avatar (its own first).
    pub fn regions_in_view(&self) -> Vec<RegionId> {
        let reach = (self.draw_distance / REGION_SIZE).ceil() as i32;
        let mut out = vec![self.home];
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                if dx == 0 && dy == 0 {
                    continue;
                }
                let (x, y) = (i32::from(self.home.x) + dx, i32::from(self.home.y) + dy);
                let (Ok(x), Ok(y)) = (u16::try_from(x), u16::try_from(y)) else { continue };
                // Distance from the avatar to the nearest point of that region's square.
                let near_x = (dx as f32 * REGION_SIZE).max(self.pos.x.min((dx + 1) as f32 * REGION_SIZE));
                let near_y = (dy as f32 * REGION_SIZE).max(self.pos.y.min((dy + 1) as f32 * REGION_SIZE));
                let d = ((near_x - self.pos.x).powi(2) + (near_y - self.pos.y).powi(2)).sqrt();
                if d < self.draw_distance {
                    out.push(RegionId::new(x, y));
                }
            }
        }
        out
    }

    /// Takes in one tick of a watched region (whose mirror already includes it).
    pub fn on_tick(&mut self, region: RegionId, out: &TickOutput, mirror: &Mirror) {
        self.spill_fresh(Some(region));
        let backlog = self.dirty.get(&region).is_some_and(|d| !d.is_empty());
        let mut fresh = match self.fresh.take() {
            Some((_, ids)) => ids,
            None => Vec::with_capacity(if backlog { 0 } else { out.changes.len() }),
        };
        for change in &out.changes {
            let id = change.id();
            let full = matches!(change, world::EntityChange::Full(_));
            if backlog {
                *self.dirty.entry(region).or_default().entry(id).or_insert(false) |= full;
            } else {
                fresh.push((id, full));
            }
            if id == self.agent {
                if let Some(pos) = mirror.local_pos(id) {
                    // The avatar is wherever its region says it is: a crossing shows up as
                    // its row arriving in the neighbour's stream. A row outside the square is
                    // the avatar held at the border while it is handed over; streams of two
                    // hosts can arrive out of order, so such a row never takes the avatar back.
                    if !world::border::outside(pos) {
                        self.home = region;
                        self.pos = pos;
                    }
                }
            }
        }
        if !out.removed.is_empty() {
            let gone: std::collections::HashSet<EntityId> = out.removed.iter().copied().collect();
            fresh.retain(|(id, _)| !gone.contains(id));
        }
        let dirty = self.dirty.entry(region).or_default();
        for id in &out.removed {
            dirty.remove(id);
            // An entity that crossed is held in its new region's frame already: the old
            // region's removal must not make the client forget it.
            if self.known.get(id) == Some(&region) {
                self.known.remove(id);
                self.removals.entry(region).or_default().push(*id);
            }
        }
        if !fresh.is_empty() {
            self.fresh = Some((region, fresh));
        }
    }

    /// Re-checks everything against draw distance: entities that came near are queued whole,
    /// entities now too far (or in a region out of view) are queued for removal. A first scan
    /// is a late join: the whole neighbourhood, to be sent nearest first.
    pub fn scan(&mut self, mirrors: &[(RegionId, &Mirror)]) {
        let mut leaving = Vec::new();
        for (&id, &region) in &self.known {
            let near = mirrors
                .iter()
                .find(|(r, _)| *r == region)
                .and_then(|(_, m)| m.local_pos(id))
                .is_some_and(|p| self.relative(region, p).length() <= self.draw_distance);
            if !near {
                leaving.push((id, region));
            }
        }
        for (id, region) in leaving {
            self.known.remove(&id);
            if let Some(d) = self.dirty.get_mut(&region) {
                d.remove(&id);
            }
            self.removals.entry(region).or_default().push(id);
        }
        for (region, mirror) in mirrors {
            let near: Vec<EntityId> = mirror
                .entities
                .keys()
                .filter(|id| self.known.get(id) != Some(region))
                .filter(|id| {
                    mirror
                        .local_pos(**id)
                        .is_some_and(|p| self.relative(*region, p).length() <= self.draw_distance)
                })
                .copied()
                .collect();
            let dirty = self.dirty.entry(*region).or_default();
            for id in near {
                dirty.insert(id, true);
            }
        }
    }

    /// Forgets pending work for a region that left the view (its entities were removed by
    /// the scan that dropped it).
    pub fn drop_region(&mut self, region: RegionId) {
        self.dirty.remove(&region);
        if self.fresh.as_ref().is_some_and(|(r, _)| *r == region) {
            self.fresh = None;
        }
    }

    /// Builds the next updates for `region` at `tick`, the avatar itself first, spending at
    /// most about `budget` bytes on entity changes, on the nearest when they do not all fit
    /// (removals are cheap and always go). With `heartbeat`, an update is produced even when
    /// nothing changed, so the client sees every tick of its own region (and can measure gaps).
    pub fn flush(
        &mut self,
        region: RegionId,
        tick: u64,
        mirror: &Mirror,
        budget: i64,
        encoding: Encoding,
        heartbeat: bool,
    ) -> Vec<Update> {
        let factor = if encoding == Encoding::Json { JSON_SIZE_FACTOR } else { 1 };
        let mut removed = self.removals.remove(&region).unwrap_or_default();
        let fresh = match self.fresh.take() {
            Some((r, ids)) if r == region => ids,
            other => {
                self.fresh = other;
                Vec::new()
            }
        };
        let dirty = self.dirty.remove(&region).unwrap_or_default();
        // Every candidate is there once when they all come from the dirty set (a map), or all
        // from the fresh list and it is strictly in id order (one tick's changes are; fresh
        // lists of two ticks merged are not, and go through the dedup below).
        let unique = fresh.is_empty() || (dirty.is_empty() && fresh.windows(2).all(|w| w[0].0 < w[1].0));
        // (distance, id, whole row, the row): from the dirty set and the fresh list alike.
        let mut candidates: Vec<(f32, EntityId, bool, &world::Entity)> =
            Vec::with_capacity(fresh.len() + dirty.len());
        let (home, pos, draw, agent) = (self.home, self.pos, self.draw_distance, self.agent);
        let offset = Vec3::new(
            (i32::from(region.x) - i32::from(home.x)) as f32 * REGION_SIZE,
            (i32::from(region.y) - i32::from(home.y)) as f32 * REGION_SIZE,
            0.0,
        );
        for (id, full) in fresh.into_iter().chain(dirty) {
            let held_here = self.known.get(&id) == Some(&region);
            let row = mirror.entities.get(&id);
            let dist = row.map(|e| {
                let local = match e.parent.and_then(|p| mirror.entities.get(&p)) {
                    Some(root) => root.pos + root.rot * e.pos,
                    None => e.pos,
                };
                (offset + local - pos).length()
            });
            match (dist, row) {
                (Some(d), Some(e)) if d <= draw || id == agent => {
                    // The avatar itself always comes first.
                    let d = if id == agent { -1.0 } else { d };
                    candidates.push((d, id, full || !held_here, e));
                }
                _ => {
                    if held_here {
                        self.known.remove(&id);
                        removed.push(id);
                    }
                }
            }
        }
        let cost = |full: bool, e: &world::Entity| -> i64 {
            let bytes = if full {
                ESTIMATED_FULL_BYTES + (e.name.len() + e.text.len()) as u64
            } else {
                ESTIMATED_MOTION_BYTES
            };
            (bytes * factor) as i64
        };
        let fits = unique && candidates.iter().map(|c| cost(c.2, c.3)).sum::<i64>() <= budget;
        if fits {
            // Everything goes this tick: the order only has to put the avatar itself first
            // (sorting every view's candidates each tick was a tenth of a busy gateway's CPU).
            if let Some(i) = candidates.iter().position(|c| c.1 == agent) {
                candidates.swap(0, i);
            }
        } else {
            // The budget picks the nearest. (distance, id) orders every pair but an id with
            // itself, which the dedup below merges whatever their order: the unstable sort
            // gives the same result, faster.
            candidates.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            // One id may be both fresh and held back: once, as a whole row if either says so.
            candidates.dedup_by(|next, kept| {
                let same = next.1 == kept.1;
                if same {
                    kept.2 |= next.2;
                }
                same
            });
        }

        let mut changes = Vec::with_capacity(candidates.len());
        let mut spent: i64 = 0;
        let mut held_back: HashMap<EntityId, bool> = HashMap::default();
        for (_, id, full, e) in candidates {
            if spent >= budget && id != agent {
                held_back.insert(id, full);
                continue;
            }
            spent += cost(full, e);
            let change = if full {
                self.known.insert(id, region);
                EntityUpdate::Full(EntityView::from(e))
            } else {
                EntityUpdate::Motion { id, pos: e.pos, rot: e.rot, vel: e.vel }
            };
            changes.push(change);
        }
        if !held_back.is_empty() {
            self.dirty.insert(region, held_back);
        }

        // One update is the common case: its changes are moved, not copied one by one.
        if changes.len() <= MAX_CHANGES_PER_UPDATE && removed.len() <= MAX_REMOVED_PER_UPDATE {
            if changes.is_empty() && removed.is_empty() && !heartbeat {
                return Vec::new();
            }
            return vec![Update { region, tick, seq: self.seq.next_seq(), changes, removed }];
        }
        let mut updates = Vec::new();
        let mut changes = changes.into_iter().peekable();
        let mut removed = removed.into_iter().peekable();
        while changes.peek().is_some() || removed.peek().is_some() || (heartbeat && updates.is_empty()) {
            updates.push(Update {
                region,
                tick,
                seq: self.seq.next_seq(),
                changes: changes.by_ref().take(MAX_CHANGES_PER_UPDATE).collect(),
                removed: removed.by_ref().take(MAX_REMOVED_PER_UPDATE).collect(),
            });
        }
        updates
    }

    /// Sequence numbers handed out so far.
    pub fn updates_issued(&self) -> u64 {
        self.seq.issued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use world::{Entity, EntityChange, Kind, ObjectState, Quat, Shape};

    fn object(id: u64, x: f32, y: f32) -> Entity {
        Entity {
            id: EntityId(id),
            kind: Kind::Object(ObjectState { physical: false }),
            pos: Vec3::new(x, y, 20.0),
            rot: Quat::IDENTITY,
            vel: Vec3::ZERO,
            scale: Vec3::ONE,
            shape: Shape::Box,
            owner: 0,
            name: format!("obj {id}"),
            text: String::new(),
            parent: None,
            gen: 1,
            body_gen: 1,
        }
    }

    fn tick(n: u64, entities: impl IntoIterator<Item = Entity>) -> TickOutput {
        TickOutput {
            tick: n,
            changes: entities.into_iter().map(EntityChange::Full).collect(),
            ..Default::default()
        }
    }

    fn ids(update: &Update) -> Vec<u64> {
        update.changes.iter().map(|c| c.id().0).collect()
    }

    const R: RegionId = RegionId::new(1, 1);

    #[test]
    fn a_late_join_gets_the_nearest_objects_first() {
        let mut mirror = Mirror::default();
        let out = tick(1, (1..=500).map(|i| object(i, 128.0 + (i % 100) as f32, 128.0)));
        mirror.apply(&out);
        let mut view = View::new(EntityId(100_000), R, Vec3::new(128.0, 128.0, 20.0), 128.0);
        view.scan(&[(R, &mirror)]);
        let first = view.flush(R, 1, &mirror, 20 * ESTIMATED_FULL_BYTES as i64, Encoding::Binary, true);
        assert_eq!(first.len(), 1);
        let sent = ids(&first[0]);
        assert!(!sent.is_empty() && sent.len() < 500, "the budget limits the first batch: {}", sent.len());
        let dist = |id: u64| (id % 100) as f32;
        assert!(sent.windows(2).all(|w| dist(w[0]) <= dist(w[1])), "nearest first: {sent:?}");
        assert!(view.has_backlog(), "the rest waits for budget");
        let mut total = sent.len();
        for n in 2..100 {
            let more = view.flush(R, n, &mirror, i64::MAX, Encoding::Binary, false);
            total += more.iter().map(|u| u.changes.len()).sum::<usize>();
            if !view.has_backlog() {
                break;
            }
        }
        assert_eq!(total, 500, "everything arrives in the end");
    }

    #[test]
    fn when_everything_fits_the_budget_everything_goes_once_with_the_avatar_first() {
        let mut mirror = Mirror::default();
        // The avatar (id 40) is the farthest of them from its own view's centre.
        let out = tick(1, (1..=40).map(|i| object(i, 100.0 + i as f32, 128.0)));
        mirror.apply(&out);
        let mut view = View::new(EntityId(40), R, Vec3::new(100.0, 128.0, 20.0), 128.0);
        view.on_tick(R, &out, &mirror);
        let first = view.flush(R, 1, &mirror, i64::MAX, Encoding::Binary, true);
        assert_eq!(first.len(), 1);
        let sent = ids(&first[0]);
        assert_eq!(sent[0], 40, "the avatar itself comes first: {sent:?}");
        let mut unique = sent.clone();
        unique.sort_unstable();
        assert_eq!(unique, (1..=40).collect::<Vec<u64>>(), "each once");
        assert!(!view.has_backlog());
        // The next tick moves them all: every one goes again, as motion, the avatar first.
        let moved = TickOutput {
            tick: 2,
            changes: (1..=40)
                .map(|i| object(i, 101.0 + i as f32, 128.0))
                .map(|e| EntityChange::Motion { id: e.id, pos: e.pos, rot: e.rot, vel: e.vel })
                .collect(),
            ..Default::default()
        };
        mirror.apply(&moved);
        view.on_tick(R, &moved, &mirror);
        let next = view.flush(R, 2, &mirror, i64::MAX, Encoding::Binary, true);
        let again = ids(&next[0]);
        assert_eq!((again.len(), again[0]), (40, 40));
        assert!(next[0].changes.iter().all(|c| matches!(c, EntityUpdate::Motion { .. })));
    }

    #[test]
    fn two_ticks_before_one_flush_send_each_entity_once() {
        let mut mirror = Mirror::default();
        let view_at = Vec3::new(128.0, 128.0, 20.0);
        let mut view = View::new(EntityId(100_000), R, view_at, 128.0);
        let first = tick(1, (1..=5).map(|i| object(i, 128.0 + i as f32, 128.0)));
        mirror.apply(&first);
        view.on_tick(R, &first, &mirror);
        let second = tick(2, (3..=7).map(|i| object(i, 120.0 + i as f32, 128.0)));
        mirror.apply(&second);
        view.on_tick(R, &second, &mirror);
        let sent = view.flush(R, 2, &mirror, i64::MAX, Encoding::Binary, true);
        let mut got = ids(&sent[0]);
        got.sort_unstable();
        assert_eq!(got, (1..=7).collect::<Vec<u64>>());
    }

    #[test]
    fn changes_held_back_by_the_budget_merge_with_the_next_ticks_and_each_goes_once_as_its_latest_state() {
        let mut mirror = Mirror::default();
        let first = tick(1, (1..=300).map(|i| object(i, 128.0 + (i % 100) as f32, 128.0)));
        mirror.apply(&first);
        let mut view = View::new(EntityId(100_000), R, Vec3::new(128.0, 128.0, 20.0), 128.0);
        view.on_tick(R, &first, &mirror);
        let sent = view.flush(R, 1, &mirror, 50 * ESTIMATED_FULL_BYTES as i64, Encoding::Binary, true);
        let mut seen: Vec<u64> = sent.iter().flat_map(ids).collect();
        assert!(seen.len() < 300 && view.has_backlog(), "the budget held {} back", 300 - seen.len());
        // The next tick moves some of the held-back objects and some already sent.
        let moved: Vec<Entity> = (1..=300).step_by(7).map(|i| object(i, 129.0, 128.0)).collect();
        assert!(
            moved.iter().any(|e| seen.contains(&e.id.0)) && moved.iter().any(|e| !seen.contains(&e.id.0))
        );
        let second = TickOutput {
            tick: 2,
            changes: moved
                .iter()
                .map(|e| EntityChange::Motion { id: e.id, pos: e.pos, rot: e.rot, vel: e.vel })
                .collect(),
            ..Default::default()
        };
        mirror.apply(&second);
        view.on_tick(R, &second, &mirror);
        let next = view.flush(R, 2, &mirror, i64::MAX, Encoding::Binary, true);
        let again: Vec<u64> = next.iter().flat_map(ids).collect();
        let mut unique = again.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), again.len(), "each entity once per update: {again:?}");
        for c in next.iter().flat_map(|u| &u.changes) {
            let (id, pos) = match c {
                EntityUpdate::Full(v) => (v.id, v.pos),
                EntityUpdate::Motion { id, pos, .. } => {
                    assert!(seen.contains(&id.0), "{} was never sent: it goes whole", id.0);
                    (*id, *pos)
                }
            };
            if moved.iter().any(|e| e.id == id) {
                assert_eq!(pos.x, 129.0, "{} goes as its latest state", id.0);
            }
        }
        seen.extend(again);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 300, "everything arrives");
        assert!(!view.has_backlog());
    }

    #[test]
    fn a_big_tick_is_split_into_numbered_updates_of_at_most_the_limit() {
        let mut mirror = Mirror::default();
        let out = tick(7, (1..=2500).map(|i| object(i, 100.0 + (i % 50) as f32, 128.0)));
        mirror.apply(&out);
        let mut view = View::new(EntityId(100_000), R, Vec3::new(128.0, 128.0, 20.0), 128.0);
        view.on_tick(R, &out, &mirror);
        let updates = view.flush(R, 7, &mirror, i64::MAX, Encoding::Binary, false);
        assert_eq!(updates.len(), 3);
        assert!(updates.iter().all(|u| u.changes.len() <= MAX_CHANGES_PER_UPDATE && u.tick == 7));
        assert_eq!(updates.iter().map(|u| u.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn an_entity_leaving_draw_distance_is_removed_and_one_coming_near_is_sent_whole() {
        let mut mirror = Mirror::default();
        let out = tick(1, [object(1, 130.0, 128.0), object(2, 250.0, 128.0)]);
        mirror.apply(&out);
        let mut view = View::new(EntityId(9), R, Vec3::new(100.0, 128.0, 20.0), 128.0);
        view.on_tick(R, &out, &mirror);
        let first = view.flush(R, 1, &mirror, i64::MAX, Encoding::Binary, false);
        assert_eq!(ids(&first[0]), vec![1], "object 2 is 150 m away");

        // The avatar walks east: object 1 stays near, object 2 comes within reach.
        let walked = TickOutput {
            tick: 2,
            changes: vec![EntityChange::Full({
                let mut me = object(9, 200.0, 128.0);
                me.kind = Kind::Avatar(world::AvatarState {
                    controls: Default::default(),
                    yaw: 0.0,
                    flying: false,
                    grounded: true,
                    seat: None,
                });
                me
            })],
            ..Default::default()
        };
        mirror.apply(&walked);
        view.on_tick(R, &walked, &mirror);
        view.scan(&[(R, &mirror)]);
        let next = view.flush(R, 2, &mirror, i64::MAX, Encoding::Binary, false);
        let sent: Vec<u64> = next.iter().flat_map(ids).collect();
        assert_eq!(sent, vec![9, 2], "the avatar first, then the newly near object, whole");
        assert!(matches!(next[0].changes[1], EntityUpdate::Full(_)));

        // Far west of object 2 again: it is removed.
        let back = TickOutput {
            tick: 3,
            changes: vec![EntityChange::Motion {
                id: EntityId(9),
                pos: Vec3::new(10.0, 128.0, 20.0),
                rot: Quat::IDENTITY,
                vel: Vec3::ZERO,
            }],
            ..Default::default()
        };
        mirror.apply(&back);
        view.on_tick(R, &back, &mirror);
        view.scan(&[(R, &mirror)]);
        let last = view.flush(R, 3, &mirror, i64::MAX, Encoding::Binary, false);
        assert_eq!(last[0].removed, vec![EntityId(2)]);
        assert!(!view.knows(EntityId(2)) && view.knows(EntityId(1)));
    }

    #[test]
    fn a_crossing_entity_is_not_forgotten_when_its_old_region_removes_it() {
        let east = RegionId::new(2, 1);
        let (mut west_m, mut east_m) = (Mirror::default(), Mirror::default());
        let out = tick(1, [object(5, 250.0, 128.0)]);
        west_m.apply(&out);
        let mut view = View::new(EntityId(9), R, Vec3::new(240.0, 128.0, 20.0), 128.0);
        view.on_tick(R, &out, &west_m);
        view.flush(R, 1, &west_m, i64::MAX, Encoding::Binary, false);

        // It arrives in the east region before the west one reports it gone.
        let arrived = tick(10, [object(5, 2.0, 128.0)]);
        east_m.apply(&arrived);
        view.on_tick(east, &arrived, &east_m);
        let sent = view.flush(east, 10, &east_m, i64::MAX, Encoding::Binary, false);
        assert!(matches!(sent[0].changes[0], EntityUpdate::Full(_)));
        let left = TickOutput { tick: 2, removed: vec![EntityId(5)], ..Default::default() };
        west_m.apply(&left);
        view.on_tick(R, &left, &west_m);
        let after = view.flush(R, 2, &west_m, i64::MAX, Encoding::Binary, false);
        assert!(after.is_empty(), "no removal for an entity the client now holds in the east: {after:?}");
        assert!(view.knows(EntityId(5)));
    }

    #[test]
    fn only_neighbours_within_draw_distance_are_in_view() {
        let view = View::new(EntityId(9), R, Vec3::new(128.0, 128.0, 20.0), 128.0);
        assert_eq!(view.regions_in_view(), vec![R], "128 m from every edge");
        let view = View::new(EntityId(9), R, Vec3::new(250.0, 128.0, 20.0), 128.0);
        assert_eq!(view.regions_in_view(), vec![R, RegionId::new(2, 1)]);
        let view = View::new(EntityId(9), R, Vec3::new(250.0, 250.0, 20.0), 128.0);
        assert_eq!(view.regions_in_view().len(), 4, "the corner sees three neighbours");
    }
}
