//! User scripts of terrane: WebAssembly modules run by wasmtime, each in its own 64 KiB memory,
//! with fuel per event and a per-tick time budget.
//!
//! A region holds its scripts as [`Script`]s, offers them [`Event`]s, runs them once per tick
//! with [`run_batch`] (in parallel, deterministic by script id) against a read-only
//! [`WorldView`], and applies the [`Effect`]s that come back. A script's whole state is plain
//! data ([`ScriptState`], [`ScriptDelta`] with 4 KiB memory chunks) for migration. The ABI
//! scripts are written against is in docs/scripting.md and [`abi`].
//!
//! This crate does no I/O in its core (the optional compiled-module cache directory aside),
//! reads no clock (time budgets are epochs the host advances) and spawns no thread (batches
//! run on a pool the caller owns).

pub mod abi;
pub mod batch;
pub mod bench;
mod cache;
pub mod engine;
pub mod event;
mod host;
pub mod limits;
pub mod module;
pub mod script;
pub mod state;
pub mod view;
mod writes;

pub use batch::{run_batch, BatchReport, ScriptEffects};
pub use bench::{bench, BenchReport};
pub use cache::CacheStats;
pub use engine::{EngineConfig, EngineError, EpochTicker, ScriptEngine, ScriptModule, TickBudget};
pub use event::{ChatRange, Effect, Event};
pub use module::LoadError;
pub use script::{Enqueued, InstantiateError, RestoreError, Script, ScriptSpec, TickReport};
pub use state::{
    Counters, ErrorKind, GlobalValue, Listen, MemoryChunk, ModuleHash, ScriptDelta, ScriptError, ScriptId,
    ScriptState, ScriptVars, StateError, Timer,
};
pub use view::{Pose, Sensed, SensorKinds, StaticView, WorldView};
