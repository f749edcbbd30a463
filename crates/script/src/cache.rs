//! Compiled modules on disk, so a restarted host does not compile its scripts again.
//!
//! A compiled module is native code: loading one is `unsafe` and must only ever be done with
//! bytes this engine wrote. So every file carries a header (magic, the engine's fingerprint,
//! the module's key, the payload's length and checksum) that is checked before wasmtime sees
//! the payload; a file that fails any check (truncated, corrupted, foreign, another engine's)
//! is deleted and the module compiled and written again. Files are written to a temporary name
//! and renamed, so a reader never sees half a file. The directory holds at most a budget of
//! bytes; beyond it the least recently used files go (use is the file's modification time,
//! refreshed at every load).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use crate::limits::MAX_CACHED_MODULE_BYTES;

/// First bytes of every cache file (format version in the last two).
const MAGIC: &[u8; 8] = b"TRNCWM01";
/// Magic, fingerprint (8), key (16), payload length (8), payload checksum (16).
const HEADER_BYTES: usize = 8 + 8 + 16 + 8 + 16;
/// Extension of cache files; nothing else in the directory is read or removed.
const EXTENSION: &str = "cwasm";

/// What the disk cache did since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Modules compiled (not found in memory or on disk).
    pub compiled: u64,
    /// Modules loaded from disk instead of compiled.
    pub loaded: u64,
    /// Files found unusable (corrupt, truncated, foreign) and replaced.
    pub rejected: u64,
    /// Files written.
    pub written: u64,
    /// Files removed to keep the directory within its byte budget.
    pub evicted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub compiled: AtomicU64,
    pub loaded: AtomicU64,
    pub rejected: AtomicU64,
    pub written: AtomicU64,
    pub evicted: AtomicU64,
}

/// The on-disk half of the module cache.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Identifies the engine (wasmtime version, its settings, this format): a compiled module
    /// only loads into an identical engine.
    fingerprint: u64,
}

/// Why a cache file was not used.
#[derive(Debug)]
enum Unusable {
    Missing,
    Bad(&'static str),
}

impl DiskCache {
    pub fn new(dir: PathBuf, max_bytes: u64, fingerprint: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache { dir, max_bytes, fingerprint })
    }

    pub fn path(&self, key: u128) -> PathBuf {
        self.dir.join(format!("{:016x}-{key:032x}.{EXTENSION}", self.fingerprint))
    }

    /// The payload stored for `key`, checked: `None` if there is none, an error saying why if
    /// the file is unusable (it is removed, so that the caller's rewrite replaces it).
    pub fn read(&self, key: u128) -> Result<Option<Vec<u8>>, &'static str> {
        let path = self.path(key);
        match self.read_checked(&path, key) {
            Ok(payload) => {
                // Recently used: eviction goes by modification time.
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Ok(Some(payload))
            }
            Err(Unusable::Missing) => Ok(None),
            Err(Unusable::Bad(why)) => {
                tracing::warn!(path = %path.display(), "ignoring a bad compiled-module cache file: {why}");
                let _ = std::fs::remove_file(&path);
                Err(why)
            }
        }
    }

    fn read_checked(&self, path: &Path, key: u128) -> Result<Vec<u8>, Unusable> {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => return Err(Unusable::Missing),
        };
        if len > (MAX_CACHED_MODULE_BYTES + HEADER_BYTES) as u64 {
            return Err(Unusable::Bad("larger than MAX_CACHED_MODULE_BYTES"));
        }
        let bytes = std::fs::read(path).map_err(|_| Unusable::Missing)?;
        if bytes.len() < HEADER_BYTES {
            return Err(Unusable::Bad("shorter than its header"));
        }
        let (header, payload) = bytes.split_at(HEADER_BYTES);
        if &header[..8] != MAGIC {
            return Err(Unusable::Bad("not a terrane compiled-module file"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let u128_at = |at: usize| u128::from_le_bytes(header[at..at + 16].try_into().expect("16 bytes"));
        if u64_at(8) != self.fingerprint {
            return Err(Unusable::Bad("written by another engine"));
        }
        if u128_at(16) != key {
            return Err(Unusable::Bad("holds another module"));
        }
        if u64_at(32) != payload.len() as u64 {
            return Err(Unusable::Bad("truncated or extended"));
        }
        if u128_at(40) != xxhash_rust::xxh3::xxh3_128(payload) {
            return Err(Unusable::Bad("checksum mismatch (corrupted)"));
        }
        Ok(payload.to_vec())
    }

    /// Stores a payload for `key` atomically, then trims the directory to its budget. Errors
    /// only cost a compile later; they are logged, not returned.
    pub fn write(&self, key: u128, payload: &[u8]) -> bool {
        if payload.len() > MAX_CACHED_MODULE_BYTES || payload.len() as u64 > self.max_bytes {
            return false;
        }
        static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
        let path = self.path(key);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}-{key:032x}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.fingerprint.to_le_bytes());
        header.extend_from_slice(&key.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(payload).to_le_bytes());
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(payload)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), "cannot write a compiled module to the cache: {e}");
            let _ = std::fs::remove_file(&tmp);
            return false;
        }
        true
    }

    /// Removes least recently used cache files until the directory holds at most the budget;
    /// returns how many went. Only this cache's own files (by extension) are counted.
    pub fn trim(&self, keep: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == EXTENSION))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let mut evicted = 0;
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                evicted += 1;
            }
        }
        evicted
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn stats(&self) -> CacheStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            compiled: load(&self.compiled),
            loaded: load(&self.loaded),
            rejected: load(&self.rejected),
            written: load(&self.written),
            evicted: load(&self.evicted),
        }
    }
}
