//! The region's side of border crossings, kept pure.
//!
//! A root entity (an unlinked object, or an avatar not seated) that moves past an edge of the
//! square towards a neighbour the host said exists (see [`Region::set_neighbours`]) is not
//! bounced: it stays just outside the square, *held*. A held unit (the root, its children, the
//! avatars seated on it, their scripts) does not move and its scripts do not run, so the copy
//! the host offers to the neighbour is exactly the state. The host then settles the crossing
//! with inputs: [`Input::Depart`](crate::Input::Depart) when the neighbour owns it,
//! [`Input::Return`](crate::Input::Return) when the crossing was called off, and on the other
//! side [`Input::Arrive`](crate::Input::Arrive). The crossing protocol's own durable state
//! rides in the region as an opaque record ([`Input::Border`](crate::Input::Border)), so
//! snapshots, deltas, hashes and migrations carry it with everything else.

use glam::Vec3;

use crate::entity::{Entity, EntityId, Kind};
use crate::limits::REGION_SIZE;
use crate::region::Region;
use crate::scripts::ScriptRecord;
use crate::RegionId;

/// The eight neighbours of a region, as bits: bit `(dy + 1) * 3 + (dx + 1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbours(pub u16);

impl Neighbours {
    pub const NONE: Neighbours = Neighbours(0);
    /// Every neighbour that the grid's coordinates allow (all eight away from the grid's
    /// low edges).
    pub const ALL: Neighbours = Neighbours(0b111_101_111);

    fn bit(dx: i32, dy: i32) -> u16 {
        1 << ((dy + 1) * 3 + (dx + 1))
    }

    /// The neighbours of `region` among `present`.
    pub fn of(region: RegionId, present: impl Fn(RegionId) -> bool) -> Neighbours {
        let mut bits = 0;
        for dy in -1..=1 {
            for dx in -1..=1 {
                if (dx, dy) == (0, 0) {
                    continue;
                }
                if offset(region, dx, dy).is_some_and(&present) {
                    bits |= Neighbours::bit(dx, dy);
                }
            }
        }
        Neighbours(bits)
    }

    pub fn has(self, dx: i32, dy: i32) -> bool {
        (dx, dy) != (0, 0) && self.0 & Neighbours::bit(dx, dy) != 0
    }
}

/// The region `(dx, dy)` steps from `region`, if the grid has such coordinates.
pub fn offset(region: RegionId, dx: i32, dy: i32) -> Option<RegionId> {
    let x = u16::try_from(i32::from(region.x) + dx).ok()?;
    let y = u16::try_from(i32::from(region.y) + dy).ok()?;
    Some(RegionId::new(x, y))
}

/// Which side of the square a region-local position is on: (0, 0) inside.
pub fn side(p: Vec3) -> (i32, i32) {
    let axis = |v: f32| {
        if v < 0.0 {
            -1
        } else if v >= REGION_SIZE {
            1
        } else {
            0
        }
    };
    (axis(p.x), axis(p.y))
}

/// Whether a root entity at `p` is held at the border.
pub fn outside(p: Vec3) -> bool {
    side(p) != (0, 0)
}

/// Whether an entity moves on its own: an unlinked object, or an avatar not seated.
pub fn is_root(e: &Entity) -> bool {
    e.parent.is_none() && e.avatar().is_none_or(|a| a.seat.is_none())
}

/// A unit taken out of a region's state (a copy; the region still holds it).
#[derive(Clone, Debug, PartialEq)]
pub struct UnitParts {
    pub root: EntityId,
    pub entities: Vec<Entity>,
    pub scripts: Vec<ScriptRecord>,
}

impl Region {
    /// Tells the region which neighbours exist, so its entities cross towards them instead of
    /// bouncing off the edge. Configuration, not state: the host sets it after every load.
    pub fn set_neighbours(&mut self, n: Neighbours) {
        self.neighbours = n;
    }

    pub fn neighbours(&self) -> Neighbours {
        self.neighbours
    }

    /// Objects that arrived from a neighbour in the current tick, with where from (for the
    /// script pass: their scripts get `region_cross`).
    pub fn arrivals(&self) -> &[(EntityId, RegionId)] {
        &self.arrivals
    }

    /// The crossing protocol's record (opaque to the region).
    pub fn border_state(&self) -> &[u8] {
        &self.border
    }

    /// The region a held root is leaving for, or `None` if it is inside the square.
    pub fn held_towards(&self, root: EntityId) -> Option<RegionId> {
        let e = self.entities.get(&root)?;
        if !is_root(e) {
            return None;
        }
        let (dx, dy) = side(e.pos);
        if (dx, dy) == (0, 0) {
            return None;
        }
        offset(self.id, dx, dy)
    }

    /// Every held root with the region it is leaving for, in id order.
    pub fn held(&self) -> Vec<(EntityId, RegionId)> {
        self.entities
            .values()
            .filter(|e| is_root(e) && outside(e.pos))
            .filter_map(|e| Some((e.id, offset(self.id, side(e.pos).0, side(e.pos).1)?)))
            .collect()
    }

    /// Whether an entity belongs to a held unit (held root, child of one, or seated on one).
    pub fn is_held(&self, id: EntityId) -> bool {
        let Some(e) = self.entities.get(&id) else { return false };
        let root = match (&e.kind, e.parent) {
            (_, Some(p)) => p,
            (Kind::Avatar(a), None) => match a.seat {
                Some(seat) => self.entities.get(&seat).and_then(|s| s.parent).unwrap_or(seat),
                None => id,
            },
            // A root itself (most scripted objects): no second lookup.
            _ => return outside(e.pos),
        };
        self.entities.get(&root).is_some_and(|r| r.parent.is_none() && outside(r.pos))
    }

    /// The members of the unit rooted at `root`: the root, its children, the avatars seated
    /// on any of them (ids in order), and their scripts.
    pub fn unit_members(&self, root: EntityId) -> Vec<EntityId> {
        let Some(r) = self.entities.get(&root) else { return Vec::new() };
        if !is_root(r) {
            return Vec::new();
        }
        let mut members: Vec<EntityId> = vec![root];
        members.extend(self.entities.values().filter(|e| e.parent == Some(root)).map(|e| e.id));
        let objects = members.clone();
        members.extend(
            self.entities
                .values()
                .filter(|e| e.avatar().and_then(|a| a.seat).is_some_and(|s| objects.contains(&s)))
                .map(|e| e.id),
        );
        members.sort_unstable();
        members
    }

    /// A copy of the unit rooted at `root`, as it is now.
    pub fn unit(&self, root: EntityId) -> Option<UnitParts> {
        let members = self.unit_members(root);
        if members.is_empty() {
            return None;
        }
        let entities = members.iter().filter_map(|id| self.entity(*id).cloned()).collect();
        let scripts = self.scripts().filter(|r| members.contains(&r.object)).cloned().collect();
        Some(UnitParts { root, entities, scripts })
    }
}
