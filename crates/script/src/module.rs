//! Load-time checks and rewriting of script modules.
//!
//! A module is refused unless it keeps to the ABI: imports only from `terrane` and only the
//! functions of [`abi::IMPORTS`], exactly one 1-page memory of its own, at most
//! [`MAX_TABLES`] small tables, no start function, and no instruction that changes state the
//! migration does not carry (table mutation, passive segment drops). Accepted modules are
//! rewritten to export their memory and every mutable global under reserved names, because the
//! host can only read and restore what a module exports, and to mark the memory chunks each
//! store writes (see [`crate::writes`]).

use std::ops::Range;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{Encoding, ExternalKind, Operator, Parser, Payload, TypeRef, ValType};

use crate::abi::{self, Handler, IMPORT_MODULE, MEMORY_EXPORT, RESERVED_EXPORT_PREFIX, WRITES_EXPORT};
use crate::limits::{MAX_MODULE_BYTES, MAX_MUTABLE_GLOBALS, MAX_TABLES, MAX_TABLE_ELEMENTS};

/// Why a module was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the module is {0} bytes, more than MAX_MODULE_BYTES (1 MiB)")]
    TooLarge(usize),
    #[error("the module is not valid WebAssembly text: {0}")]
    Text(String),
    #[error("the module is not valid WebAssembly: {0}")]
    Invalid(String),
    #[error("the module imports {module}.{name}, which is not part of the script ABI: a script may import only the functions of module \"terrane\" listed in docs/scripting.md")]
    UnknownImport { module: String, name: String },
    #[error("the module imports {module}.{name} as a {kind}: a script may import only functions")]
    ImportKind { module: String, name: String, kind: &'static str },
    #[error("the module imports terrane.{name} as {found}, but the ABI declares {expected}")]
    ImportSignature { name: String, expected: String, found: String },
    #[error("the module exports event handler {name} as {found}, but the ABI declares {expected}")]
    HandlerSignature { name: String, expected: String, found: String },
    #[error("the module must define exactly one memory of 1 page (memory 1 1); it {0}")]
    Memory(String),
    #[error("the module declares {0} tables; at most {MAX_TABLES} are allowed")]
    TooManyTables(u32),
    #[error(
        "a table may hold at most {MAX_TABLE_ELEMENTS} elements (initial and maximum); this one asks for {0}"
    )]
    TableTooLarge(u64),
    #[error("mutable global {index} has type {ty}; only numeric mutable globals (i32, i64, f32, f64, v128) can be migrated")]
    GlobalType { index: u32, ty: String },
    #[error("the module has {0} mutable globals, more than MAX_MUTABLE_GLOBALS ({MAX_MUTABLE_GLOBALS})")]
    TooManyGlobals(usize),
    #[error("the module has a start function; scripts begin in their exported `start` event instead")]
    StartFunction,
    #[error("the module exports {0:?}; names beginning with __terrane_ are reserved for the loader")]
    ReservedExport(String),
    #[error(
        "function {func} uses {op}, which changes state a migration does not carry; scripts may not use it"
    )]
    ForbiddenInstruction { func: u32, op: &'static str },
    #[error("the module uses {0}, which scripts may not use")]
    Unsupported(&'static str),
    #[error("compiling the module failed: {0}")]
    Compile(String),
}

const GLOBAL_SECTION: u8 = 6;
const CODE_SECTION: u8 = 10;

/// What the loader learnt about an accepted module.
#[derive(Clone, Debug, Default)]
pub struct ModuleInfo {
    /// Bit `Handler as u8` is set for each event handler the module exports.
    pub handlers: u16,
    /// Global index and value type of every mutable global, in index order.
    pub mutable_globals: Vec<(u32, ValType)>,
}

impl ModuleInfo {
    pub fn has(&self, h: Handler) -> bool {
        self.handlers & h.bit() != 0
    }
}

/// Checks a module against the ABI and returns it rewritten to export its memory and mutable
/// globals under reserved names.
pub fn prepare(wasm: &[u8]) -> Result<(Vec<u8>, ModuleInfo), LoadError> {
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(LoadError::TooLarge(wasm.len()));
    }
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid(e.to_string());
    let mut info = ModuleInfo::default();
    let mut sections: Vec<(u8, Range<usize>)> = Vec::new();
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    let mut export_at: Option<usize> = None;
    let mut imported_funcs = 0u32;
    let mut memories = 0u32;
    let mut tables = 0u32;
    let mut func_index = 0u32;
    // For the store instrumentation: parameter counts of the function types, the type of each
    // defined function, the number of globals (the mask is the next one) and the function
    // bodies, rewritten.
    let mut type_params: Vec<u32> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut globals = 0u32;
    let mut global_section = wasm_encoder::GlobalSection::new();
    let mut code = wasm_encoder::CodeSection::new();
    let mut body_index = 0usize;

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::Version { encoding, .. } if *encoding != Encoding::Module => {
                return Err(LoadError::Unsupported("the component model"));
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    let import = import.map_err(invalid)?;
                    let kind = match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => None,
                        TypeRef::Table(_) => Some("table"),
                        TypeRef::Memory(_) => Some("memory"),
                        TypeRef::Global(_) => Some("global"),
                        TypeRef::Tag(_) => Some("tag"),
                    };
                    if import.module != IMPORT_MODULE || abi::import(import.name).is_none() {
                        return Err(LoadError::UnknownImport {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                        });
                    }
                    if let Some(kind) = kind {
                        return Err(LoadError::ImportKind {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                            kind,
                        });
                    }
                    imported_funcs += 1;
                }
                func_index = imported_funcs;
            }
            Payload::TableSection(reader) => {
                for table in reader.clone() {
                    let table = table.map_err(invalid)?;
                    tables += 1;
                    if table.ty.table64 || table.ty.shared {
                        return Err(LoadError::Unsupported("64-bit or shared tables"));
                    }
                    let asked = table.ty.maximum.unwrap_or(table.ty.initial).max(table.ty.initial);
                    if asked > MAX_TABLE_ELEMENTS {
                        return Err(LoadError::TableTooLarge(asked));
                    }
                }
                if tables > MAX_TABLES {
                    return Err(LoadError::TooManyTables(tables));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.clone() {
                    let m = memory.map_err(invalid)?;
                    memories += 1;
                    if m.memory64 || m.shared {
                        return Err(LoadError::Memory("declares a 64-bit or shared memory".into()));
                    }
                    if m.page_size_log2.is_some_and(|p| p != 16) {
                        return Err(LoadError::Memory("uses a custom page size".into()));
                    }
                    if m.initial != 1 || m.maximum.is_some_and(|max| max != 1) {
                        return Err(LoadError::Memory(format!(
                            "declares (memory {} {})",
                            m.initial,
                            m.maximum.map(|x| x.to_string()).unwrap_or_default()
                        )));
                    }
                }
            }
            Payload::TagSection(_) => return Err(LoadError::Unsupported("exception tags")),
            Payload::TypeSection(reader) => {
                for ty in reader.clone().into_iter_err_on_gc_types() {
                    type_params.push(ty.map_err(invalid)?.params().len() as u32);
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader.clone() {
                    func_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::GlobalSection(reader) => {
                globals = reader.count();
                RoundtripReencoder
                    .parse_global_section(&mut global_section, reader.clone())
                    .map_err(|e| LoadError::Invalid(e.to_string()))?;
                for (index, global) in reader.clone().into_iter().enumerate() {
                    let g = global.map_err(invalid)?;
                    if !g.ty.mutable {
                        continue;
                    }
                    let index = index as u32;
                    match g.ty.content_type {
                        ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128 => {}
                        ValType::Ref(r) => return Err(LoadError::GlobalType { index, ty: format!("{r:?}") }),
                    }
                    info.mutable_globals.push((index, g.ty.content_type));
                }
                if info.mutable_globals.len() > MAX_MUTABLE_GLOBALS {
                    return Err(LoadError::TooManyGlobals(info.mutable_globals.len()));
                }
            }
            Payload::ExportSection(reader) => {
                export_at = Some(sections.len());
                for export in reader.clone() {
                    let e = export.map_err(invalid)?;
                    if e.name.starts_with(RESERVED_EXPORT_PREFIX) {
                        return Err(LoadError::ReservedExport(e.name.to_string()));
                    }
                    if matches!(e.kind, ExternalKind::Func | ExternalKind::FuncExact) {
                        if let Some(h) = Handler::from_export(e.name) {
                            info.handlers |= h.bit();
                        }
                    }
                    exports.push((e.name.to_string(), e.kind, e.index));
                }
            }
            Payload::StartSection { .. } => return Err(LoadError::StartFunction),
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    if let Some(op) = forbidden(&ops.read().map_err(invalid)?) {
                        return Err(LoadError::ForbiddenInstruction { func: func_index, op });
                    }
                }
                let params =
                    func_types
                        .get(body_index)
                        .and_then(|&t| type_params.get(t as usize))
                        .copied()
                        .ok_or_else(|| LoadError::Invalid(format!("function {func_index} has no type")))?;
                code.function(&crate::writes::instrument(body, params, globals).map_err(LoadError::Invalid)?);
                body_index += 1;
                func_index += 1;
            }
            Payload::ModuleSection { .. }
            | Payload::InstanceSection(_)
            | Payload::CoreTypeSection(_)
            | Payload::ComponentSection { .. }
            | Payload::ComponentInstanceSection(_)
            | Payload::ComponentAliasSection(_)
            | Payload::ComponentTypeSection(_)
            | Payload::ComponentCanonicalSection(_)
            | Payload::ComponentStartSection { .. }
            | Payload::ComponentImportSection(_)
            | Payload::ComponentExportSection(_) => {
                return Err(LoadError::Unsupported("the component model"))
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            sections.push((id, range));
        }
    }
    if memories != 1 {
        return Err(LoadError::Memory(format!("declares {memories}")));
    }

    // The export section keeps its place; a module without one gets it where the binary
    // format wants it: after the global section, before start/element/data-count/code/data.
    let insert_at = export_at.unwrap_or_else(|| {
        sections.iter().position(|(id, _)| matches!(id, 8..=12)).unwrap_or(sections.len())
    });
    // The write mask: one more global, after the module's own (none are imported).
    let had_globals = sections.iter().any(|(id, _)| *id == GLOBAL_SECTION);
    global_section.global(
        wasm_encoder::GlobalType { val_type: wasm_encoder::ValType::I64, mutable: true, shared: false },
        &wasm_encoder::ConstExpr::i64_const(0),
    );
    let mut out = wasm_encoder::Module::new();
    let emit_exports = |out: &mut wasm_encoder::Module| {
        if !had_globals {
            out.section(&global_section);
        }
        let mut section = wasm_encoder::ExportSection::new();
        for (name, kind, index) in &exports {
            section.export(name, export_kind(*kind), *index);
        }
        section.export(MEMORY_EXPORT, wasm_encoder::ExportKind::Memory, 0);
        for (index, _) in &info.mutable_globals {
            section.export(&abi::global_export_name(*index), wasm_encoder::ExportKind::Global, *index);
        }
        section.export(WRITES_EXPORT, wasm_encoder::ExportKind::Global, globals);
        out.section(&section);
    };
    for (i, (id, range)) in sections.iter().enumerate() {
        if i == insert_at {
            emit_exports(&mut out);
        }
        match *id {
            _ if export_at == Some(i) => {}
            GLOBAL_SECTION => {
                out.section(&global_section);
            }
            CODE_SECTION => {
                out.section(&code);
            }
            id => {
                out.section(&wasm_encoder::RawSection { id, data: &wasm[range.clone()] });
            }
        }
    }
    if insert_at == sections.len() {
        emit_exports(&mut out);
    }
    Ok((out.finish(), info))
}

fn export_kind(kind: ExternalKind) -> wasm_encoder::ExportKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => wasm_encoder::ExportKind::Func,
        ExternalKind::Table => wasm_encoder::ExportKind::Table,
        ExternalKind::Memory => wasm_encoder::ExportKind::Memory,
        ExternalKind::Global => wasm_encoder::ExportKind::Global,
        ExternalKind::Tag => wasm_encoder::ExportKind::Tag,
    }
}

/// Instructions that change state outside memory and globals: tables and the dropped flags of
/// passive segments. A migration copies memory and globals only, so these are refused.
fn forbidden(op: &Operator) -> Option<&'static str> {
    Some(match op {
        Operator::TableSet { .. } => "table.set",
        Operator::TableGrow { .. } => "table.grow",
        Operator::TableFill { .. } => "table.fill",
        Operator::TableCopy { .. } => "table.copy",
        Operator::TableInit { .. } => "table.init",
        Operator::ElemDrop { .. } => "elem.drop",
        Operator::DataDrop { .. } => "data.drop",
        Operator::MemoryInit { .. } => "memory.init",
        _ => return None,
    })
}
