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

    /// Whether changes are waiting for budget.
    pub fn has_backlog(&self) -> bool {
        self.dirty.values().any(|d| !d.is_empty()) || self.removals.values().any(|r| !r.is_empty())
    }

    /// Regions held back by the budget.
    pub fn backlog_regions(&self) -> Vec<RegionId> {
        let dirty = self.dirty.iter().filter(|(_, d)| !d.is_empty()).map(|(r, _)| *r);
        let removed = self.removals.iter().filter(|(_, d)| !d.is_empty()).map(|(r, _)| *r);
        dirty.chain(removed).collect::<BTreeSet<_>>().into_iter().collect()
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
        let dirty = self.dirty.entry(region).or_default();
        for change in &out.changes {
            let id = change.id();
            let full = matches!(change, world::EntityChange::Full(_));
            *dirty.entry(id).or_insert(false) |= full;
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
        for id in &out.removed {
            dirty.remove(id);
            // An entity that crossed is held in its new region's frame already: the old
            // region's removal must not make the client forget it.
            if self.known.get(id) == Some(&region) {
                self.known.remove(id);
                self.removals.entry(region).or_default().push(*id);
            }
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
    }

    /// Builds the next updates for `region` at `tick`, nearest first, spending at most about
    /// `budget` bytes on entity changes (removals are cheap and always go). With `heartbeat`,
    /// an update is produced even when nothing changed, so the client sees every tick of its
    /// own region (and can measure gaps).
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
        let mut candidates: Vec<(f32, EntityId, bool)> = Vec::new();
        if let Some(dirty) = self.dirty.get_mut(&region) {
            let mut gone = Vec::new();
            for (&id, &full) in dirty.iter() {
                let held_here = self.known.get(&id) == Some(&region);
                let dist = mirror.local_pos(id).map(|p| {
                    let dx = (i32::from(region.x) - i32::from(self.home.x)) as f32 * REGION_SIZE;
                    let dy = (i32::from(region.y) - i32::from(self.home.y)) as f32 * REGION_SIZE;
                    (Vec3::new(dx + p.x, dy + p.y, p.z) - self.pos).length()
                });
                match dist {
                    Some(d) if d <= self.draw_distance || id == self.agent => {
                        // The avatar itself always comes first.
                        let d = if id == self.agent { -1.0 } else { d };
                        candidates.push((d, id, full || !held_here));
                    }
                    _ => {
                        gone.push(id);
                        if held_here {
                            removed.push(id);
                        }
                    }
                }
            }
            for id in gone {
                dirty.remove(&id);
                if self.known.get(&id) == Some(&region) {
                    self.known.remove(&id);
                }
            }
        }
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

        let mut changes = Vec::new();
        let mut spent: i64 = 0;
        for (_, id, full) in candidates {
            if spent >= budget && id != self.agent {
                break;
            }
            let Some(e) = mirror.entities.get(&id) else { continue };
            let change = if full {
                spent += ((ESTIMATED_FULL_BYTES + (e.name.len() + e.text.len()) as u64) * factor) as i64;
                EntityUpdate::Full(EntityView::from(e))
            } else {
                spent += (ESTIMATED_MOTION_BYTES * factor) as i64;
                EntityUpdate::Motion { id, pos: e.pos, rot: e.rot, vel: e.vel }
            };
            changes.push(change);
            self.known.insert(id, region);
            if let Some(d) = self.dirty.get_mut(&region) {
                d.remove(&id);
            }
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
