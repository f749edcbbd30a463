//! Loading modules: what the ABI refuses, with messages that name the problem, and the
//! compiled-module caches.

mod common;

use common::{engine, load, new_script, view, wat};
use script::{LoadError, TickBudget};

fn refused(source: &str) -> LoadError {
    engine().load(source.as_bytes()).expect_err("module should be refused")
}

#[test]
fn a_module_importing_an_unknown_function_is_refused_naming_it() {
    let err = engine().load(&wat("bad_import")).expect_err("refused");
    assert!(
        matches!(&err, LoadError::UnknownImport { module, name } if module == "terrane" && name == "launch_missiles")
    );
    assert!(err.to_string().contains("terrane.launch_missiles"), "{err}");
}

#[test]
fn imports_from_other_modules_are_refused() {
    let err = refused(r#"(module (import "env" "say" (func (param i32 i32 i32))) (memory 1 1))"#);
    assert!(err.to_string().contains("env.say"), "{err}");
}

#[test]
fn an_import_with_the_wrong_signature_is_refused() {
    let err = refused(r#"(module (import "terrane" "say" (func (param i32))) (memory 1 1))"#);
    assert!(matches!(err, LoadError::ImportSignature { .. }), "{err}");
    assert!(err.to_string().contains("say"), "{err}");
}

#[test]
fn imported_memories_are_refused() {
    let err = refused(r#"(module (import "terrane" "memory" (memory 1 1)))"#);
    assert!(err.to_string().contains("terrane.memory"), "{err}");
}

#[test]
fn a_handler_with_the_wrong_signature_is_refused() {
    let err = refused(r#"(module (memory 1 1) (func (export "touch") (param i32)))"#);
    assert!(matches!(err, LoadError::HandlerSignature { .. }), "{err}");
}

#[test]
fn memories_other_than_exactly_one_page_are_refused() {
    for bad in [
        "(module)",
        "(module (memory 2 2))",
        "(module (memory 1 2))",
        "(module (memory 0 1))",
        "(module (memory 1 1) (memory 1 1))",
    ] {
        let err = engine().load(bad.as_bytes()).expect_err(bad);
        assert!(matches!(err, LoadError::Memory(_) | LoadError::Compile(_)), "{bad}: {err}");
    }
    // One page with no maximum loads; growing it is stopped at run time.
    engine().load(b"(module (memory 1))").expect("memory 1 without maximum");
}

#[test]
fn large_or_many_tables_are_refused() {
    let err = refused("(module (memory 1 1) (table 100000 funcref))");
    assert!(matches!(err, LoadError::TableTooLarge(100000)), "{err}");
    let err = refused("(module (memory 1 1) (table 1 funcref) (table 1 funcref))");
    assert!(matches!(err, LoadError::TooManyTables(2) | LoadError::Compile(_)), "{err}");
}

#[test]
fn instructions_that_change_unmigrated_state_are_refused() {
    let err = refused(
        "(module (memory 1 1) (table 2 funcref) (func $f) (func (export \"start\") (table.set (i32.const 0) (ref.func $f))) (elem declare func $f))",
    );
    assert!(matches!(err, LoadError::ForbiddenInstruction { op: "table.set", .. }), "{err}");
}

#[test]
fn a_start_function_is_refused() {
    let err = refused("(module (memory 1 1) (func $s) (start $s))");
    assert!(matches!(err, LoadError::StartFunction), "{err}");
}

#[test]
fn reserved_export_names_are_refused() {
    let err =
        refused(r#"(module (memory 1 1) (global (export "__terrane_global_0") (mut i32) (i32.const 0)))"#);
    assert!(matches!(err, LoadError::ReservedExport(_)), "{err}");
}

#[test]
fn garbage_is_refused_without_panicking() {
    for bytes in [&b""[..], b"\0asm", b"\0asm\x01\0\0\0\x05\xff", b"(module (func", &[0xff; 64]] {
        assert!(engine().load(bytes).is_err());
    }
}

#[test]
fn unexported_mutable_globals_are_exported_by_the_loader_and_migrate() {
    let e = engine();
    let m = e
        .load(
            br#"(module (memory 1 1)
                 (global $g (mut i64) (i64.const 5))
                 (global $k i32 (i32.const 1))
                 (global $h (mut f32) (f32.const 0.5))
                 (func (export "touch") (param i64)
                   (global.set $g (i64.add (global.get $g) (local.get 0)))
                   (global.set $h (f32.mul (global.get $h) (f32.const 3)))))"#,
        )
        .expect("load");
    assert_eq!(m.mutable_globals(), 2);
    let mut s = new_script(&m, 0);
    s.enqueue(script::Event::Touch { toucher: world::EntityId(10) });
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    let state = s.capture();
    assert_eq!(state.globals, vec![script::GlobalValue::I64(15), script::GlobalValue::F32(1.5f32.to_bits())]);
}

#[test]
fn the_same_module_is_compiled_once_and_cached_on_disk_for_restarts() {
    let dir = std::env::temp_dir().join(format!("terrane-script-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = script::EngineConfig { max_scripts: 8, cache_dir: Some(dir.clone()), ..Default::default() };
    let first = script::ScriptEngine::new(cfg.clone()).expect("engine");
    let a = load(&first, "counter");
    let b = load(&first, "counter");
    assert!(std::sync::Arc::ptr_eq(&a, &b), "second load comes from the memory cache");
    assert!(first.is_cached_on_disk(&a));
    drop(first);

    // A restarted engine finds the compiled module on disk and runs it.
    let second = script::ScriptEngine::new(cfg).expect("engine");
    let c = load(&second, "counter");
    assert_eq!(c.hash(), a.hash());
    let mut s = new_script(&c, 1);
    s.run_tick(&view(2), TickBudget::UNLIMITED);
    assert!(s.error().is_none(), "{:?}", s.error());
    assert_eq!(s.listens().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn atomic_instructions_are_refused() {
    // Their writes would escape the loader's write tracking; scripts have no threads anyway.
    let e = engine();
    let wat = r#"(module (memory 1 1)
      (func (export "touch") (param i64) (i32.atomic.store (i32.const 0) (i32.const 1))))"#;
    assert!(e.load(wat.as_bytes()).is_err());
}
