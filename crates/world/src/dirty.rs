//! Which entities changed in the last generations: lets `delta_since` visit those rows instead
//! of scanning every entity, so a checkpoint or a migration round cut at a tick boundary costs
//! what changed, not the size of the region. Derived state: never encoded, never hashed.

use std::collections::{BTreeSet, VecDeque};

use crate::entity::EntityId;
use crate::limits::{MAX_RECENT_CHANGED_IDS, MAX_RECENT_STEPS};

#[derive(Clone, Debug, Default)]
pub(crate) struct Recent {
    /// Every entity stamped after this generation is in `steps` (`None`: nothing is known).
    from: Option<u64>,
    /// (generation, entities stamped with it or, after a delta, with one since the previous
    /// step), oldest first, ending at the region's generation.
    steps: VecDeque<(u64, Vec<EntityId>)>,
    ids: usize,
}

impl Recent {
    /// Knows that nothing changed after `generation` (a region just built or decoded).
    pub(crate) fn at(generation: u64) -> Recent {
        Recent { from: Some(generation), ..Default::default() }
    }

    /// The region went from generation `before` to `after`, stamping `ids` (all of them). A
    /// step that does not continue the last one restarts the index from `before`.
    pub(crate) fn record(&mut self, before: u64, after: u64, ids: impl IntoIterator<Item = EntityId>) {
        let last = self.steps.back().map(|s| s.0).or(self.from);
        if last != Some(before) {
            self.steps.clear();
            self.ids = 0;
            self.from = Some(before);
        }
        let ids: Vec<EntityId> = ids.into_iter().collect();
        self.ids += ids.len();
        self.steps.push_back((after, ids));
        while self.steps.len() > MAX_RECENT_STEPS || self.ids > MAX_RECENT_CHANGED_IDS {
            let Some((g, old)) = self.steps.pop_front() else { break };
            self.ids -= old.len();
            self.from = Some(g);
        }
    }

    /// Every entity that may have been stamped after `base` (a superset: callers check the
    /// stamps), or `None` if the index does not reach back that far.
    pub(crate) fn since(&self, base: u64) -> Option<BTreeSet<EntityId>> {
        if self.from? > base {
            return None;
        }
        let mut out = BTreeSet::new();
        for (g, ids) in self.steps.iter().rev() {
            if *g <= base {
                break;
            }
            out.extend(ids.iter().copied());
        }
        Some(out)
    }
}
