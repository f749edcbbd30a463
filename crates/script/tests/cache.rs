//! The compiled-module cache on disk: a restarted engine loads instead of compiling, and a file
//! that is corrupt, truncated or foreign is never trusted: it is compiled and written anew.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use script::{CacheStats, EngineConfig, ScriptEngine, TickBudget};

/// A fresh, empty cache directory for one test.
fn cache_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("terrane-module-cache-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn engine_at(dir: &Path, max_bytes: u64) -> ScriptEngine {
    ScriptEngine::new(EngineConfig {
        max_scripts: 8,
        cache_dir: Some(dir.to_path_buf()),
        cache_max_bytes: max_bytes,
        ..EngineConfig::default()
    })
    .expect("engine")
}

const BIG: u64 = 1 << 30;

/// The counter script runs its start event (it opens one listen) without an error.
fn runs(engine: &ScriptEngine) {
    let m = load(engine, "counter");
    let mut s = new_script(&m, 1);
    s.run_tick(&view(2), TickBudget::UNLIMITED);
    assert!(s.error().is_none(), "{:?}", s.error());
    assert_eq!(s.listens().len(), 1);
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_restarted_engine_loads_the_compiled_module_from_disk_instead_of_compiling() {
    let dir = cache_dir("restart");
    let first = engine_at(&dir, BIG);
    runs(&first);
    runs(&first);
    assert_eq!(first.cache_stats(), CacheStats { compiled: 1, written: 1, ..CacheStats::default() });
    drop(first);

    let second = engine_at(&dir, BIG);
    runs(&second);
    assert_eq!(second.cache_stats(), CacheStats { loaded: 1, ..CacheStats::default() });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupted_cache_file_is_not_trusted_but_compiled_and_written_again() {
    let dir = cache_dir("corrupt");
    let first = engine_at(&dir, BIG);
    let file = first.cache_file(&load(&first, "counter")).expect("a cache directory");
    drop(first);

    // One flipped bit deep inside the native code.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let second = engine_at(&dir, BIG);
    runs(&second);
    assert_eq!(
        second.cache_stats(),
        CacheStats { compiled: 1, rejected: 1, written: 1, ..CacheStats::default() }
    );
    drop(second);

    // The rewritten file is good again.
    let third = engine_at(&dir, BIG);
    runs(&third);
    assert_eq!(third.cache_stats(), CacheStats { loaded: 1, ..CacheStats::default() });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_and_foreign_files_under_the_right_name_are_replaced() {
    let dir = cache_dir("foreign");
    let first = engine_at(&dir, BIG);
    let file = first.cache_file(&load(&first, "counter")).expect("a cache directory");
    let good = std::fs::read(&file).unwrap();
    drop(first);

    let bad: [Vec<u8>; 4] = [
        good[..good.len() / 2].to_vec(),
        Vec::new(),
        b"\x7fELF not ours at all".to_vec(),
        // A well-formed file of another engine (fingerprint bytes changed).
        {
            let mut g = good.clone();
            g[8] ^= 1;
            g
        },
    ];
    for (i, content) in bad.iter().enumerate() {
        std::fs::write(&file, content).unwrap();
        let e = engine_at(&dir, BIG);
        runs(&e);
        let s = e.cache_stats();
        assert_eq!((s.rejected, s.compiled, s.loaded, s.written), (1, 1, 0, 1), "case {i}: {s:?}");
        assert_eq!(std::fs::read(&file).unwrap().len(), good.len(), "case {i}: the file was rewritten");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cache_directory_keeps_within_its_byte_budget_dropping_the_least_recently_used() {
    let dir = cache_dir("budget");
    let probe = engine_at(&dir, BIG);
    let file = probe.cache_file(&load(&probe, "counter")).expect("a cache directory");
    let one = std::fs::metadata(&file).unwrap().len();
    drop(probe);
    let _ = std::fs::remove_dir_all(&dir);

    // Room for about two compiled modules; five different ones are loaded in turn.
    let budget = one * 5 / 2;
    let e = engine_at(&dir, budget);
    let names = ["counter", "greeter", "trivial", "flood", "recurse"];
    let mut last = None;
    for name in names {
        let m = load(&e, name);
        last = e.cache_file(&m);
        let total: u64 = cache_files(&dir).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert!(total <= budget, "{total} bytes on disk after {name}, budget {budget}");
    }
    let s = e.cache_stats();
    assert_eq!(s.compiled, 5);
    assert!(s.evicted >= 2, "{s:?}");
    let files = cache_files(&dir);
    assert!(files.contains(&last.unwrap()), "the newest module is kept: {files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
