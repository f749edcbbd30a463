//! The host side of the ABI: the store data of each script instance and the `terrane` imports.
//!
//! Host calls check every pointer and length against the script's 64 KiB memory; a bad one is
//! an error for that script only. Calls that would change the region only record an
//! [`Effect`]; listens, the timer and the random generator are the script's own state and
//! change at once.

use wasmtime::{Caller, Linker, Memory, ResourceLimiter};
use world::{EntityId, Quat, Vec3};

use crate::abi::{self, IMPORT_MODULE, SENSE_AVATARS, SENSE_OBJECTS, SENSOR_RECORD_BYTES};
use crate::event::{ChatRange, Effect};
use crate::limits::{
    MAX_EFFECTS_PER_EVENT, MAX_LISTENS_PER_SCRIPT, MAX_MESSAGE_BYTES, MAX_SENSOR_RANGE, MAX_SENSOR_RESULTS,
    MAX_TABLE_ELEMENTS, MAX_TEMPLATE_NAME_BYTES, MAX_TEXT_BYTES, MAX_TIMER_INTERVAL_MS, MEMORY_BYTES,
    MIN_TIMER_INTERVAL_MS,
};
use crate::state::{Listen, ScriptVars, Timer};
use crate::view::{Pose, Sensed, SensorKinds, WorldView};
use crate::writes::chunk_bits;

/// A host call made with bad arguments: the script's fault, so the script stops.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadCall(pub String);

/// The script tried to grow its memory.
#[derive(Debug, thiserror::Error)]
#[error("memory.grow to {0} bytes refused: a script has exactly one 64 KiB page")]
pub(crate) struct GrowthRefused(pub usize);

/// Something the host got wrong (say, a view without the script's own object).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HostFault(pub String);

/// A pointer to the batch's world view, valid while the script's events run.
///
/// wasmtime's store data must be `'static`, but a view borrows the region for one batch only.
/// The pointer is set right before a script's events run and cleared right after (see
/// `Script::run_tick`); host functions only run inside that window, on the same thread.
#[derive(Clone, Copy)]
pub(crate) struct ViewPtr(*const (dyn WorldView + 'static));

// SAFETY: `WorldView: Sync`, so a pointer to one may move to another thread like `&dyn
// WorldView` may; the pointer is only dereferenced while the borrow it came from is alive.
unsafe impl Send for ViewPtr {}
unsafe impl Sync for ViewPtr {}

impl ViewPtr {
    pub(crate) fn new(view: &dyn WorldView) -> ViewPtr {
        let ptr: *const (dyn WorldView + '_) = view;
        // SAFETY: only the trait object's lifetime bound changes (same fat-pointer layout);
        // `get` is only called while `view` is borrowed by the running batch (see above).
        ViewPtr(unsafe {
            std::mem::transmute::<*const (dyn WorldView + '_), *const (dyn WorldView + 'static)>(ptr)
        })
    }

    fn get(&self) -> &dyn WorldView {
        // SAFETY: see the type's documentation: set and cleared around the only code that
        // can reach this call.
        unsafe { &*self.0 }
    }
}

/// The data of one script's wasmtime store.
pub(crate) struct HostState {
    pub object: EntityId,
    pub vars: ScriptVars,
    pub memory: Option<Memory>,
    pub view: Option<ViewPtr>,
    /// Effects of the running event.
    pub effects: Vec<Effect>,
    /// Bytes of the running event, for `read_event`.
    pub payload: Vec<u8>,
    /// The object's pose as the running event sees it: read from the view on first use, then
    /// updated by the event's own `set_*` calls, so a script reads back what it set.
    pub own: Option<Pose>,
    pub own_text: Option<String>,
    /// Scratch space for sensor results, kept to avoid allocating per query.
    pub sensed: Vec<Sensed>,
    /// Memory chunks host calls wrote since the script last took its writes (the module's
    /// own stores mark theirs in its write-mask global; see `crate::writes`).
    pub writes: u64,
}

impl HostState {
    pub(crate) fn new(object: EntityId, vars: ScriptVars) -> HostState {
        HostState {
            object,
            vars,
            memory: None,
            view: None,
            effects: Vec::new(),
            payload: Vec::new(),
            own: None,
            own_text: None,
            sensed: Vec::new(),
            writes: 0,
        }
    }

    fn view(&self) -> wasmtime::Result<ViewPtr> {
        self.view.ok_or_else(|| wasmtime::Error::new(HostFault("host call outside an event".into())))
    }

    fn push(&mut self, effect: Effect) {
        if self.effects.len() < MAX_EFFECTS_PER_EVENT {
            self.effects.push(effect);
        } else {
            self.vars.counters.effects_dropped += 1;
        }
    }

    fn pose(&mut self) -> wasmtime::Result<Pose> {
        if let Some(p) = self.own {
            return Ok(p);
        }
        let view = self.view()?;
        let pose = view.get().pose(self.object).ok_or_else(|| {
            wasmtime::Error::new(HostFault(format!(
                "the world view has no entity {} (the script's object)",
                self.object
            )))
        })?;
        self.own = Some(pose);
        Ok(pose)
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired <= MEMORY_BYTES {
            Ok(true)
        } else {
            // An error (not `Ok(false)`) so memory.grow traps and the script stops visibly
            // instead of carrying on with a -1 it probably never checks.
            Err(wasmtime::Error::new(GrowthRefused(desired)))
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired as u64 <= MAX_TABLE_ELEMENTS)
    }
}

fn bad(msg: String) -> wasmtime::Error {
    wasmtime::Error::new(BadCall(msg))
}

/// The script's memory and its store data, borrowed together.
fn split<'a>(c: &'a mut Caller<'_, HostState>) -> wasmtime::Result<(&'a mut [u8], &'a mut HostState)> {
    let memory =
        c.data().memory.ok_or_else(|| wasmtime::Error::new(HostFault("script memory not bound".into())))?;
    Ok(memory.data_and_store_mut(c))
}

/// `len` bytes at `ptr`, both read as unsigned 32-bit, checked against memory and `max`.
fn range(
    mem_len: usize,
    ptr: i32,
    len: i32,
    max: usize,
    call: &str,
) -> wasmtime::Result<std::ops::Range<usize>> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > max {
        return Err(bad(format!("{call}: {len} bytes is more than the limit of {max}")));
    }
    match start.checked_add(len) {
        Some(end) if end <= mem_len => Ok(start..end),
        _ => {
            Err(bad(format!("{call}: bytes {start}..{} are outside the script's 64 KiB memory", start + len)))
        }
    }
}

fn read_str<'a>(mem: &'a [u8], ptr: i32, len: i32, max: usize, call: &str) -> wasmtime::Result<&'a str> {
    let r = range(mem.len(), ptr, len, max, call)?;
    std::str::from_utf8(&mem[r]).map_err(|_| bad(format!("{call}: text is not UTF-8")))
}

/// The bytes of `mem` a host call is about to write, marked in the script's write mask.
fn written<'a>(mem: &'a mut [u8], writes: &mut u64, r: std::ops::Range<usize>) -> &'a mut [u8] {
    *writes |= chunk_bits(&r);
    &mut mem[r]
}

fn write_f32s(
    mem: &mut [u8],
    writes: &mut u64,
    ptr: i32,
    values: &[f32],
    call: &str,
) -> wasmtime::Result<()> {
    let r = range(mem.len(), ptr, (values.len() * 4) as i32, values.len() * 4, call)?;
    for (dst, v) in written(mem, writes, r).chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

fn finite(values: &[f32], call: &str) -> wasmtime::Result<()> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(bad(format!("{call}: arguments must be finite numbers, got {values:?}")))
    }
}

/// SplitMix64: tiny, fast, and its whole state is one u64 that migrates with the script.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn chat(
    c: &mut Caller<'_, HostState>,
    channel: i32,
    ptr: i32,
    len: i32,
    range_: ChatRange,
) -> wasmtime::Result<()> {
    let call = match range_ {
        ChatRange::Say => "say",
        ChatRange::Shout => "shout",
        ChatRange::Region => "region_say",
    };
    let (mem, st) = split(c)?;
    let text = read_str(mem, ptr, len, MAX_MESSAGE_BYTES, call)?;
    if st.effects.len() < MAX_EFFECTS_PER_EVENT {
        st.effects.push(Effect::Say { channel, range: range_, text: text.to_owned() });
    } else {
        st.vars.counters.effects_dropped += 1;
    }
    Ok(())
}

/// Defines every import of [`abi::IMPORTS`] in `linker`.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = IMPORT_MODULE;
    linker.func_wrap(m, "say", |mut c: Caller<'_, HostState>, ch: i32, p: i32, l: i32| {
        chat(&mut c, ch, p, l, ChatRange::Say)
    })?;
    linker.func_wrap(m, "shout", |mut c: Caller<'_, HostState>, ch: i32, p: i32, l: i32| {
        chat(&mut c, ch, p, l, ChatRange::Shout)
    })?;
    linker.func_wrap(m, "region_say", |mut c: Caller<'_, HostState>, ch: i32, p: i32, l: i32| {
        chat(&mut c, ch, p, l, ChatRange::Region)
    })?;
    linker.func_wrap(m, "listen", |mut c: Caller<'_, HostState>, channel: i32| -> i32 {
        let vars = &mut c.data_mut().vars;
        if vars.listens.len() >= MAX_LISTENS_PER_SCRIPT {
            return -1;
        }
        let handle = vars.next_listen_handle;
        // Handles stay non-negative (-1 means "refused"); after 2^31 listens they wrap.
        vars.next_listen_handle = handle.wrapping_add(1) & i32::MAX;
        vars.listens.push(Listen { handle, channel });
        vars.listens.sort_by_key(|l| l.handle);
        handle
    })?;
    linker.func_wrap(m, "unlisten", |mut c: Caller<'_, HostState>, handle: i32| -> i32 {
        let listens = &mut c.data_mut().vars.listens;
        let before = listens.len();
        listens.retain(|l| l.handle != handle);
        (listens.len() != before) as i32
    })?;
    linker.func_wrap(m, "send_message", |mut c: Caller<'_, HostState>, to: i64, p: i32, l: i32| {
        let (mem, st) = split(&mut c)?;
        let r = range(mem.len(), p, l, MAX_MESSAGE_BYTES, "send_message")?;
        let bytes = mem[r].to_vec();
        st.push(Effect::Message { to: EntityId(to as u64), bytes });
        Ok(())
    })?;
    linker.func_wrap(
        m,
        "set_timer",
        |mut c: Caller<'_, HostState>, interval_ms: i64| -> wasmtime::Result<()> {
            let st = c.data_mut();
            if interval_ms <= 0 {
                st.vars.timer = None;
                return Ok(());
            }
            let now = st.view()?.get().now_ms();
            let interval_ms = (interval_ms as u64).clamp(MIN_TIMER_INTERVAL_MS, MAX_TIMER_INTERVAL_MS);
            st.vars.timer = Some(Timer { interval_ms, next_due_ms: now.saturating_add(interval_ms) });
            Ok(())
        },
    )?;
    linker.func_wrap(m, "get_pos", |mut c: Caller<'_, HostState>, out: i32| {
        let (mem, st) = split(&mut c)?;
        let values = st.pose()?.pos.to_array();
        write_f32s(mem, &mut st.writes, out, &values, "get_pos")
    })?;
    linker.func_wrap(m, "get_rot", |mut c: Caller<'_, HostState>, out: i32| {
        let (mem, st) = split(&mut c)?;
        let values = st.pose()?.rot.to_array();
        write_f32s(mem, &mut st.writes, out, &values, "get_rot")
    })?;
    linker.func_wrap(m, "get_vel", |mut c: Caller<'_, HostState>, out: i32| {
        let (mem, st) = split(&mut c)?;
        let values = st.pose()?.vel.to_array();
        write_f32s(mem, &mut st.writes, out, &values, "get_vel")
    })?;
    linker.func_wrap(m, "get_scale", |mut c: Caller<'_, HostState>, out: i32| {
        let (mem, st) = split(&mut c)?;
        let values = st.pose()?.scale.to_array();
        write_f32s(mem, &mut st.writes, out, &values, "get_scale")
    })?;
    linker.func_wrap(m, "set_pos", |mut c: Caller<'_, HostState>, x: f32, y: f32, z: f32| {
        finite(&[x, y, z], "set_pos")?;
        let st = c.data_mut();
        let mut pose = st.pose()?;
        pose.pos = Vec3::new(x, y, z);
        st.own = Some(pose);
        st.push(Effect::SetPos(pose.pos));
        Ok(())
    })?;
    linker.func_wrap(m, "set_rot", |mut c: Caller<'_, HostState>, x: f32, y: f32, z: f32, w: f32| {
        finite(&[x, y, z, w], "set_rot")?;
        let q = Quat::from_xyzw(x, y, z, w);
        if q.length_squared() < 1e-12 {
            return Err(bad("set_rot: the rotation has zero length".into()));
        }
        let q = q.normalize();
        let st = c.data_mut();
        let mut pose = st.pose()?;
        pose.rot = q;
        st.own = Some(pose);
        st.push(Effect::SetRot(q));
        Ok(())
    })?;
    linker.func_wrap(m, "set_vel", |mut c: Caller<'_, HostState>, x: f32, y: f32, z: f32| {
        finite(&[x, y, z], "set_vel")?;
        let st = c.data_mut();
        let mut pose = st.pose()?;
        pose.vel = Vec3::new(x, y, z);
        st.own = Some(pose);
        st.push(Effect::SetVel(pose.vel));
        Ok(())
    })?;
    linker.func_wrap(m, "set_scale", |mut c: Caller<'_, HostState>, x: f32, y: f32, z: f32| {
        finite(&[x, y, z], "set_scale")?;
        let st = c.data_mut();
        let mut pose = st.pose()?;
        pose.scale = Vec3::new(x, y, z);
        st.own = Some(pose);
        st.push(Effect::SetScale(pose.scale));
        Ok(())
    })?;
    linker.func_wrap(
        m,
        "get_text",
        |mut c: Caller<'_, HostState>, out: i32, cap: i32| -> wasmtime::Result<i32> {
            let (mem, st) = split(&mut c)?;
            let view = st.view()?;
            let text = match &st.own_text {
                Some(t) => t.as_str(),
                None => view.get().text(st.object).unwrap_or(""),
            };
            let n = text.len().min(cap.max(0) as usize);
            let r = range(mem.len(), out, n as i32, MAX_TEXT_BYTES.max(n), "get_text")?;
            written(mem, &mut st.writes, r).copy_from_slice(&text.as_bytes()[..n]);
            Ok(text.len() as i32)
        },
    )?;
    linker.func_wrap(m, "set_text", |mut c: Caller<'_, HostState>, p: i32, l: i32| {
        let (mem, st) = split(&mut c)?;
        let text = read_str(mem, p, l, MAX_TEXT_BYTES, "set_text")?.to_owned();
        st.own_text = Some(text.clone());
        st.push(Effect::SetText(text));
        Ok(())
    })?;
    linker.func_wrap(m, "now_ms", |c: Caller<'_, HostState>| -> wasmtime::Result<i64> {
        Ok(c.data().view()?.get().now_ms() as i64)
    })?;
    linker.func_wrap(m, "region", |c: Caller<'_, HostState>| -> wasmtime::Result<i32> {
        Ok(abi::pack_region(c.data().view()?.get().region()))
    })?;
    linker.func_wrap(m, "own_id", |c: Caller<'_, HostState>| -> i64 { c.data().object.0 as i64 })?;
    linker.func_wrap(m, "random_u64", |mut c: Caller<'_, HostState>| -> i64 {
        next_random(&mut c.data_mut().vars.rng) as i64
    })?;
    linker.func_wrap(m, "random_f32", |mut c: Caller<'_, HostState>| -> f32 {
        // The top 24 bits fill an f32 mantissa exactly, so the result is uniform in [0, 1).
        (next_random(&mut c.data_mut().vars.rng) >> 40) as f32 / (1u32 << 24) as f32
    })?;
    linker.func_wrap(
        m,
        "sensor",
        |mut c: Caller<'_, HostState>,
         kinds: i32,
         range_m: f32,
         out: i32,
         max: i32|
         -> wasmtime::Result<i32> {
            let max = (max.max(0) as usize).min(MAX_SENSOR_RESULTS);
            let range_m = if range_m.is_nan() { 0.0 } else { range_m.clamp(0.0, MAX_SENSOR_RANGE) };
            let (mem, st) = split(&mut c)?;
            // The whole output area is checked up front, so a bad pointer fails the same way
            // whether or not anything is nearby.
            let area = range(
                mem.len(),
                out,
                (max * SENSOR_RECORD_BYTES) as i32,
                max * SENSOR_RECORD_BYTES,
                "sensor",
            )?;
            let view = st.view()?;
            let origin = view.get().pose(st.object).map(|p| p.pos).ok_or_else(|| {
                wasmtime::Error::new(HostFault(format!("the world view has no entity {}", st.object)))
            })?;
            let wanted =
                SensorKinds { avatars: kinds & SENSE_AVATARS != 0, objects: kinds & SENSE_OBJECTS != 0 };
            let mut found = std::mem::take(&mut st.sensed);
            found.clear();
            view.get().sensor(origin, range_m, wanted, &mut found);
            let me = st.object;
            found.retain(|s| {
                s.id != me
                    && (if s.avatar { wanted.avatars } else { wanted.objects })
                    && s.pos.distance(origin) <= range_m
            });
            found.sort_by(|a, b| {
                a.pos.distance(origin).total_cmp(&b.pos.distance(origin)).then(a.id.cmp(&b.id))
            });
            found.truncate(max);
            let records =
                written(mem, &mut st.writes, area.start..area.start + found.len() * SENSOR_RECORD_BYTES);
            for (s, rec) in found.iter().zip(records.chunks_exact_mut(SENSOR_RECORD_BYTES)) {
                rec[0..8].copy_from_slice(&s.id.0.to_le_bytes());
                rec[8..12].copy_from_slice(&(if s.avatar { 1u32 } else { 2u32 }).to_le_bytes());
                rec[12..16].copy_from_slice(&s.pos.distance(origin).to_le_bytes());
                for (i, v) in s.pos.to_array().iter().enumerate() {
                    rec[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_le_bytes());
                }
                rec[28..32].fill(0);
            }
            let n = found.len() as i32;
            st.sensed = found;
            Ok(n)
        },
    )?;
    linker.func_wrap(
        m,
        "create_object",
        |mut c: Caller<'_, HostState>,
         p: i32,
         l: i32,
         x: f32,
         y: f32,
         z: f32,
         param: i32|
         -> wasmtime::Result<()> {
            finite(&[x, y, z], "create_object")?;
            let (mem, st) = split(&mut c)?;
            let template = read_str(mem, p, l, MAX_TEMPLATE_NAME_BYTES, "create_object")?.to_owned();
            st.push(Effect::CreateObject { template, pos: Vec3::new(x, y, z), param });
            Ok(())
        },
    )?;
    linker
        .func_wrap(m, "delete_self", |mut c: Caller<'_, HostState>| c.data_mut().push(Effect::DeleteSelf))?;
    linker.func_wrap(m, "save", |mut c: Caller<'_, HostState>| c.data_mut().push(Effect::Save))?;
    linker.func_wrap(
        m,
        "read_event",
        |mut c: Caller<'_, HostState>, out: i32, cap: i32| -> wasmtime::Result<i32> {
            let (mem, st) = split(&mut c)?;
            let n = st.payload.len().min(cap.max(0) as usize);
            let r = range(mem.len(), out, n as i32, MAX_MESSAGE_BYTES, "read_event")?;
            written(mem, &mut st.writes, r).copy_from_slice(&st.payload[..n]);
            Ok(st.payload.len() as i32)
        },
    )?;
    Ok(())
}
