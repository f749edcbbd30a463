//! The state hash, kept cheap: each entity's and each script record's hash is cached under its
//! generation stamp, and the rows enter the hash as a wrapping sum of (id, row hash) mixes kept
//! up to date, so hashing a region costs a scan of stamps plus the rows that changed since the
//! last hash (a freeze hashes on both sides; it must not cost a pass over 10,000 rows).
//!
//! Every change to a row stamps it with the region's current generation, and generations never
//! repeat within one region's history, so (id, stamp) names one content: a cached hash with the
//! same stamp is the hash of the same bytes. The property tests compare hashes against fresh
//! replicas (empty caches) and canonical bytes, which is what keeps that rule honest.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Mutex;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::entity::EntityId;
use crate::region::Region;
use crate::scripts::ScriptId;

#[derive(Default, Clone)]
struct Cache {
    entities: HashMap<EntityId, (u64, u64)>,
    scripts: HashMap<ScriptId, (u64, u64)>,
    /// (newest patch stamp, water level bits, seed) → hash of the terrain's encoding.
    terrain: Option<((u64, u32, u32), u64)>,
    /// (module count, template count, newest module stamp, newest template stamp) → their hash.
    shared: Option<((usize, usize, u64, u64), u64)>,
    /// The generation the row caches and sums below describe, if they describe one.
    at: Option<u64>,
    /// Wrapping sums of [`row`] over every entity and every script record.
    entity_sum: u64,
    script_sum: u64,
}

/// One row's share of a sum: its id and content hash, mixed.
fn row(id: u64, hash: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..].copy_from_slice(&hash.to_le_bytes());
    xxh3_64(&b)
}

/// Brings one table's cache and sum up to date. Rows change only by getting a stamp newer
/// than every generation before (in a tick, or applying a delta after `base`), and leave with a
/// tombstone of such a stamp: so after generation `at`, the rows stamped later and the
/// tombstones newer than `at` are all that can differ. Without such a generation (a fresh
/// replica, or tombstones pruned past it) every row is visited; unchanged ones still come
/// from the cache.
fn refresh<'a, K, T>(
    cache: &mut HashMap<K, (u64, u64)>,
    sum: &mut u64,
    at: Option<u64>,
    rows: impl Iterator<Item = (K, u64, &'a T)>,
    tombstones: impl Iterator<Item = (K, u64)>,
    id_of: impl Fn(K) -> u64,
) where
    K: Copy + Eq + std::hash::Hash,
    T: serde::Serialize + 'a,
{
    match at {
        Some(at) => {
            for (id, gen) in tombstones {
                if gen > at {
                    if let Some((_, h)) = cache.remove(&id) {
                        *sum = sum.wrapping_sub(row(id_of(id), h));
                    }
                }
            }
            for (id, gen, r) in rows {
                if gen <= at {
                    continue;
                }
                let hash = encode_hash(r);
                if let Some((_, old)) = cache.insert(id, (gen, hash)) {
                    *sum = sum.wrapping_sub(row(id_of(id), old));
                }
                *sum = sum.wrapping_add(row(id_of(id), hash));
            }
        }
        None => {
            let mut fresh = HashMap::default();
            *sum = 0;
            for (id, gen, r) in rows {
                let hash = match cache.get(&id) {
                    Some(&(g, h)) if g == gen => h,
                    _ => encode_hash(r),
                };
                fresh.insert(id, (gen, hash));
                *sum = sum.wrapping_add(row(id_of(id), hash));
            }
            *cache = fresh;
        }
    }
}

/// Per-region cache of row hashes. Cloning a region clones it (the clone's rows are the same).
#[derive(Default)]
pub(crate) struct HashCache(Mutex<Cache>);

impl Clone for HashCache {
    fn clone(&self) -> Self {
        HashCache(Mutex::new(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()))
    }
}

impl std::fmt::Debug for HashCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashCache")
    }
}

fn encode_hash<T: serde::Serialize>(v: &T) -> u64 {
    xxh3_64(&postcard::to_stdvec(v).expect("serializing to memory cannot fail"))
}

impl Region {
    /// Takes over the hash cache of `copy`, a clone of this region made earlier (this region's
    /// state must descend from it: it only ticked or took deltas since), when the copy's is
    /// further along. Lets a copy be hashed off the tick thread for the live region's benefit.
    /// Given anything else, later hashes would be wrong (a migration then aborts on the
    /// mismatch; nothing is corrupted), so callers pass only such copies.
    pub fn adopt_hash_cache(&self, copy: &Region) {
        if copy.id != self.id || copy.generation > self.generation || std::ptr::eq(self, copy) {
            return;
        }
        let mut theirs = copy.hash_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = self.hash_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if theirs.at.is_some() && mine.at.is_none_or(|m| Some(m) < theirs.at) {
            *mine = std::mem::take(&mut *theirs);
        }
    }

    /// A hash of the whole state: header fields, terrain, and every entity and script record
    /// (by id, in order) through the hash of its canonical encoding, plus modules and
    /// templates. Equal hashes at the same tick mean equal state (up to 64-bit collisions).
    pub fn state_hash(&self) -> u64 {
        let mut cache = self.hash_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = Xxh3::new();
        let header =
            (crate::FORMAT_VERSION, self.id, self.tick, self.generation, self.now_us, self.next_serial);
        h.update(&postcard::to_stdvec(&header).expect("serializing to memory cannot fail"));

        let key = (self.terrain.newest_patch_gen(), self.terrain.water_level.to_bits(), self.terrain.seed);
        let terrain = match cache.terrain {
            Some((k, hash)) if k == key => hash,
            _ => {
                let hash = encode_hash(&self.terrain);
                cache.terrain = Some((key, hash));
                hash
            }
        };
        h.update(&terrain.to_le_bytes());

        let at = cache.at.filter(|&g| g >= self.tombstone_floor && g <= self.generation);
        let c = &mut *cache;
        refresh(
            &mut c.entities,
            &mut c.entity_sum,
            at,
            self.entities.values().map(|e| (e.id, e.gen, e)),
            self.tombstones.iter().map(|(&id, &g)| (id, g)),
            |id| id.0,
        );
        let records = &self.scripts.records;
        refresh(
            &mut c.scripts,
            &mut c.script_sum,
            at,
            records.values().map(|r| (r.id, r.gen, r)),
            self.script_tombstones.iter().map(|(&id, &g)| (id, g)),
            |id| id.0,
        );
        c.at = Some(self.generation);
        h.update(&(self.entities.len() as u64).to_le_bytes());
        h.update(&c.entity_sum.to_le_bytes());
        h.update(&(records.len() as u64).to_le_bytes());
        h.update(&c.script_sum.to_le_bytes());

        // Modules and templates are few and rarely change: hashed whole when they do.
        let (modules, templates) = (&self.scripts.modules, &self.scripts.templates);
        let key = (
            modules.len(),
            templates.len(),
            modules.values().map(|m| m.gen).max().unwrap_or(0),
            templates.values().map(|t| t.gen).max().unwrap_or(0),
        );
        let shared = match c.shared {
            Some((k, hash)) if k == key => hash,
            _ => {
                let hash = encode_hash(&(modules, templates));
                c.shared = Some((key, hash));
                hash
            }
        };
        h.update(&shared.to_le_bytes());
        // The crossing protocol's record: small, hashed whole.
        h.update(&self.border_gen.to_le_bytes());
        h.update(&xxh3_64(&self.border).to_le_bytes());
        h.digest()
    }
}
