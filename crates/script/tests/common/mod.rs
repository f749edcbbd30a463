//! Helpers shared by the script engine's tests: engines, example scripts, views.
#![allow(dead_code)]

use std::sync::Arc;

use script::{EngineConfig, Script, ScriptEngine, ScriptId, ScriptModule, ScriptSpec, StaticView};
use world::{EntityId, RegionId, Vec3};

/// Source of an example script in crates/script/scripts/.
pub fn wat(name: &str) -> Vec<u8> {
    let path = format!("{}/scripts/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A small engine: tests hold few scripts at once.
pub fn engine() -> ScriptEngine {
    ScriptEngine::new(EngineConfig { max_scripts: 64, ..EngineConfig::default() }).expect("engine")
}

pub fn load(engine: &ScriptEngine, name: &str) -> Arc<ScriptModule> {
    engine.load(&wat(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn spec(id: u64) -> ScriptSpec {
    ScriptSpec { id: ScriptId(id), object: object(id), seed: 0x5eed ^ id }
}

pub fn object(id: u64) -> EntityId {
    EntityId(1000 + id)
}

pub fn new_script(module: &Arc<ScriptModule>, id: u64) -> Script {
    Script::new(module, spec(id)).expect("instantiate")
}

/// A view holding the objects of scripts 0..n at (100 + i, 100, 20).
pub fn view(n: u64) -> StaticView {
    let mut v = StaticView::new(0, RegionId::new(3, 4));
    for i in 0..n {
        v.insert(object(i), false, Vec3::new(100.0 + i as f32, 100.0, 20.0));
    }
    v
}
