//! The state hash, kept cheap: each entity's and each script record's hash is cached under its
//! generation stamp, so hashing a region costs one pass over ids plus the rows that changed.
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

        h.update(&(self.entities.len() as u64).to_le_bytes());
        for e in self.entities.values() {
            let row = match cache.entities.get(&e.id) {
                Some(&(gen, hash)) if gen == e.gen => hash,
                _ => {
                    let hash = encode_hash(e);
                    cache.entities.insert(e.id, (e.gen, hash));
                    hash
                }
            };
            h.update(&e.id.0.to_le_bytes());
            h.update(&row.to_le_bytes());
        }
        if cache.entities.len() > 2 * self.entities.len() + 64 {
            cache.entities.retain(|id, _| self.entities.contains_key(id));
        }

        let records = &self.scripts.records;
        h.update(&(records.len() as u64).to_le_bytes());
        for r in records.values() {
            let row = match cache.scripts.get(&r.id) {
                Some(&(gen, hash)) if gen == r.gen => hash,
                _ => {
                    let hash = encode_hash(r);
                    cache.scripts.insert(r.id, (r.gen, hash));
                    hash
                }
            };
            h.update(&r.id.0.to_le_bytes());
            h.update(&row.to_le_bytes());
        }
        if cache.scripts.len() > 2 * records.len() + 64 {
            cache.scripts.retain(|id, _| records.contains_key(id));
        }
        // Modules and templates are few, small and rarely change: hashed whole.
        h.update(&encode_hash(&(&self.scripts.modules, &self.scripts.templates)).to_le_bytes());
        // The crossing protocol's record: small, hashed whole.
        h.update(&self.border_gen.to_le_bytes());
        h.update(&xxh3_64(&self.border).to_le_bytes());
        h.digest()
    }
}
