//! Which 1 KiB chunks of its memory a script wrote: the loader rewrites every function so each
//! store also sets the chunk's bit in a 64-bit mask (a global the loader adds), and host calls
//! that write into a script's memory set the same bits on their side. Taking a delta then
//! hashes only the marked chunks instead of all 64 KiB of every script that ran (2,000 scripts
//! firing their timers in one tick are 128 MB of hashing otherwise).
//!
//! The mask may over-mark (a multi-byte store marks its chunk and the next; bulk operations
//! mark everything) but never under-mark: a chunk whose bit is clear kept its content. Debug
//! builds check that against a full hash on every refresh.

use std::ops::Range;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{Function, Instruction};
use wasmparser::{FunctionBody, MemArg, Operator, ValType};

use crate::limits::{CHUNKS, CHUNK_BYTES};

// One bit per chunk in an i64 mask.
const _: () = assert!(CHUNKS == 64 && CHUNK_BYTES.is_power_of_two());
const CHUNK_SHIFT: i32 = CHUNK_BYTES.trailing_zeros() as i32;

/// Every chunk's bit.
pub(crate) const ALL: u64 = u64::MAX;

/// The bits of the chunks that `bytes` (a range of the script's memory) touches.
pub(crate) fn chunk_bits(bytes: &Range<usize>) -> u64 {
    if bytes.is_empty() {
        return 0;
    }
    let (first, last) = (bytes.start / CHUNK_BYTES, (bytes.end - 1) / CHUNK_BYTES);
    if first >= CHUNKS {
        return 0;
    }
    let last = last.min(CHUNKS - 1);
    let width = last - first + 1;
    let run = if width == CHUNKS { ALL } else { (1u64 << width) - 1 };
    run << first
}

/// The indices of the set bits of `mask`, lowest first.
pub(crate) fn chunks_in(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}

/// How an operator writes the script's memory.
enum Write {
    /// A plain store of `bytes` bytes of a value of type `value` at address + offset.
    Store { value: ValType, bytes: u32, offset: u64 },
    /// Writes a range only known at run time (memory.fill, memory.copy).
    Bulk,
}

fn write_of(op: &Operator) -> Option<Write> {
    let store =
        |value: ValType, bytes: u32, m: &MemArg| Some(Write::Store { value, bytes, offset: m.offset });
    match op {
        Operator::I32Store { memarg } => store(ValType::I32, 4, memarg),
        Operator::I32Store8 { memarg } => store(ValType::I32, 1, memarg),
        Operator::I32Store16 { memarg } => store(ValType::I32, 2, memarg),
        Operator::I64Store { memarg } => store(ValType::I64, 8, memarg),
        Operator::I64Store8 { memarg } => store(ValType::I64, 1, memarg),
        Operator::I64Store16 { memarg } => store(ValType::I64, 2, memarg),
        Operator::I64Store32 { memarg } => store(ValType::I64, 4, memarg),
        Operator::F32Store { memarg } => store(ValType::F32, 4, memarg),
        Operator::F64Store { memarg } => store(ValType::F64, 8, memarg),
        Operator::V128Store { memarg } => store(ValType::V128, 16, memarg),
        Operator::V128Store8Lane { memarg, .. } => store(ValType::V128, 1, memarg),
        Operator::V128Store16Lane { memarg, .. } => store(ValType::V128, 2, memarg),
        Operator::V128Store32Lane { memarg, .. } => store(ValType::V128, 4, memarg),
        Operator::V128Store64Lane { memarg, .. } => store(ValType::V128, 8, memarg),
        Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } | Operator::MemoryInit { .. } => {
            Some(Write::Bulk)
        }
        _ => None,
    }
}

/// The value types a store may leave on the stack, in the order of their scratch locals.
const SCRATCH: [ValType; 5] = [ValType::I32, ValType::I64, ValType::F32, ValType::F64, ValType::V128];

/// Rewrites one function body so that every memory write also marks its chunks in global
/// `mask`. `params` is the function's parameter count (locals are numbered after them).
///
/// A store `[addr, value] → []` becomes: value and address into scratch locals,
/// `mask |= bits << ((addr + offset) >> CHUNK_SHIFT)`, both back on the stack, the store. `bits` is 1 for a 1-byte store and 3 otherwise (the chunk and the next, which a
/// store across a chunk boundary also touches). Shifts are taken modulo 64 and the address
/// sum wraps at 2^32, which only changes the bits of a store that traps out of bounds anyway.
pub(crate) fn instrument(body: &FunctionBody, params: u32, mask: u32) -> Result<Function, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut re = RoundtripReencoder;
    let mut locals = Vec::new();
    let mut declared = 0u32;
    for pair in body.get_locals_reader().map_err(err)? {
        let (count, ty) = pair.map_err(err)?;
        declared = declared.checked_add(count).ok_or("too many locals")?;
        locals.push((count, re.val_type(ty).map_err(|e| e.to_string())?));
    }
    // Scratch locals only for the value types this body stores (a v128 local needs SIMD).
    let mut used = [false; SCRATCH.len()];
    let mut ops = body.get_operators_reader().map_err(err)?;
    while !ops.eof() {
        if let Some(Write::Store { value, .. }) = write_of(&ops.read().map_err(err)?) {
            used[scratch_slot(value)] = true;
        }
    }
    let base = params.checked_add(declared).ok_or("too many locals")?;
    let addr_local = base;
    let mut value_local = [0u32; SCRATCH.len()];
    let mut next = base + 1;
    locals.push((1, wasm_encoder::ValType::I32));
    for (slot, ty) in SCRATCH.iter().enumerate() {
        if used[slot] {
            value_local[slot] = next;
            next += 1;
            locals.push((1, re.val_type(*ty).map_err(|e| e.to_string())?));
        }
    }
    let mut f = Function::new(locals);
    let mut ops = body.get_operators_reader().map_err(err)?;
    while !ops.eof() {
        let op = ops.read().map_err(err)?;
        match write_of(&op) {
            Some(Write::Store { value, bytes, offset }) => {
                let v = value_local[scratch_slot(value)];
                f.instruction(&Instruction::LocalSet(v));
                f.instruction(&Instruction::LocalSet(addr_local));
                f.instruction(&Instruction::GlobalGet(mask));
                f.instruction(&Instruction::I64Const(if bytes == 1 { 1 } else { 3 }));
                f.instruction(&Instruction::LocalGet(addr_local));
                if offset != 0 {
                    f.instruction(&Instruction::I32Const(offset as u32 as i32));
                    f.instruction(&Instruction::I32Add);
                }
                f.instruction(&Instruction::I32Const(CHUNK_SHIFT));
                f.instruction(&Instruction::I32ShrU);
                f.instruction(&Instruction::I64ExtendI32U);
                f.instruction(&Instruction::I64Shl);
                f.instruction(&Instruction::I64Or);
                f.instruction(&Instruction::GlobalSet(mask));
                f.instruction(&Instruction::LocalGet(addr_local));
                f.instruction(&Instruction::LocalGet(v));
            }
            Some(Write::Bulk) => {
                f.instruction(&Instruction::I64Const(ALL as i64));
                f.instruction(&Instruction::GlobalSet(mask));
            }
            None => {}
        }
        f.instruction(&re.instruction(op).map_err(|e| e.to_string())?);
    }
    Ok(f)
}

fn scratch_slot(ty: ValType) -> usize {
    SCRATCH.iter().position(|t| *t == ty).expect("stores only take numeric and vector values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bits_cover_exactly_the_touched_chunks() {
        assert_eq!(chunk_bits(&(0..0)), 0);
        assert_eq!(chunk_bits(&(0..1)), 1);
        assert_eq!(chunk_bits(&(1023..1025)), 0b11);
        assert_eq!(chunk_bits(&(1024..2048)), 0b10);
        assert_eq!(chunk_bits(&(0..CHUNKS * CHUNK_BYTES)), ALL);
        assert_eq!(chunk_bits(&(63 * CHUNK_BYTES..64 * CHUNK_BYTES)), 1 << 63);
        assert_eq!(chunks_in(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(chunks_in(ALL).count(), CHUNKS);
    }
}
