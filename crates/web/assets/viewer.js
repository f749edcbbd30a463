// The browser viewer: a client of the documented protocol (docs/protocol.md, JSON encoding).
// It logs in as a guest, draws the terrain and entities of the avatar's region and its
// neighbours from above, walks with the keyboard and chats.
"use strict";

const PROTOCOL_VERSION = 2;
const REGION_SIZE = 256;
const TERRAIN_SAMPLES = 256;
// Between two updates, entities move on with their velocity for at most this long.
const MAX_EXTRAPOLATE_S = 0.5;
const MAX_CHAT_LINES = 200;
const RECONNECT_MS = 2000;
// A ping now and then measures the round trip through the gateway.
const PING_EVERY_MS = 2000;

const $ = (id) => document.getElementById(id);
const canvas = $("view");
const g = canvas.getContext("2d");

const state = {
  ws: null,
  agent: null, // our avatar's id (decimal string)
  drawDistance: 128,
  tickHz: 45,
  terrains: new Map(), // "x,y" -> { image: canvas, water: number }
  entities: new Map(), // id -> entity as last told, plus region and arrival time
  seq: { last: 0, gaps: 0, replays: 0 },
  controls: { forward: 0, strafe: 0, turn: 0, up: 0, jump: false, fly: false, run: false },
  flying: false,
  held: new Set(),
  scale: 2, // pixels per metre
  lastError: "",
  crossings: 0,
  lastRegion: null,
  lastControlsAt: 0,
  controlsTimer: null,
  pings: new Map(), // nonce -> sent at (performance.now())
  nextNonce: 1,
  rttMs: null,
};
window.terrane = state; // for a look from the browser's console

const key = (r) => r.x + "," + r.y;

// ---------- connection ----------

async function login() {
  const name = "Visitor" + Math.floor(Math.random() * 1000);
  const r = await fetch("/guest?name=" + encodeURIComponent(name));
  if (!r.ok) throw new Error("no guest pass: " + (await r.text()));
  return r.json();
}

async function connect() {
  setConn("logging in…", false);
  let pass;
  try {
    pass = await login();
  } catch (e) {
    say("error", String(e));
    setTimeout(connect, RECONNECT_MS);
    return;
  }
  state.entities.clear();
  state.seq = { last: 0, gaps: 0, replays: 0 };
  // A new session starts standing still.
  state.controls = { forward: 0, strafe: 0, turn: 0, up: 0, jump: false, fly: false, run: false };
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    // A text frame: the session speaks JSON both ways.
    ws.send(JSON.stringify({ hello: { version: PROTOCOL_VERSION, token: pass.token, encoding: "json" } }));
  };
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      say("error", "the gateway sent something that is not JSON");
      return;
    }
    handle(msg);
  };
  ws.onclose = (ev) => {
    setConn(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""}); reconnecting…`, false);
    state.ws = null;
    setTimeout(connect, RECONNECT_MS);
  };
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function setConn(text, up) {
  $("conn").textContent = text;
  $("conn").className = up ? "conn up" : "conn";
}

// ---------- messages from the gateway ----------

function handle(msg) {
  if (msg.welcome) {
    const w = msg.welcome;
    state.agent = w.agent;
    state.drawDistance = w.draw_distance;
    state.tickHz = w.tick_hz;
    state.lastRegion = key(w.region);
    setConn(`in region ${key(w.region)} as ${w.agent}`, true);
  } else if (msg.region_info) {
    loadTerrain(msg.region_info);
  } else if (msg.update) {
    applyUpdate(msg.update);
  } else if (msg.chat) {
    say(msg.chat.name, msg.chat.text, msg.chat.channel);
  } else if (msg.pong) {
    const sent = state.pings.get(msg.pong.nonce);
    if (sent !== undefined) {
      state.rttMs = performance.now() - sent;
      state.pings.delete(msg.pong.nonce);
    }
  } else if (msg.error) {
    state.lastError = `${msg.error.code}: ${msg.error.message}`;
    say("error", state.lastError);
  } else if (msg.script_error) {
    // One of our objects' scripts stopped (docs/protocol.md, script_error).
    const e = msg.script_error;
    say("error", `script in object ${e.object} stopped (${e.kind}): ${e.message}`);
  }
}

function applyUpdate(u) {
  // Sequence numbers: exactly one more is in order; more is a gap; less or equal a replay.
  if (u.seq <= state.seq.last) {
    state.seq.replays += 1;
    return;
  }
  if (u.seq > state.seq.last + 1 && state.seq.last > 0) state.seq.gaps += u.seq - state.seq.last - 1;
  state.seq.last = u.seq;
  const now = performance.now();
  for (const c of u.changes) {
    if (c.full) {
      state.entities.set(c.full.id, { ...c.full, region: u.region, at: now });
    } else if (c.motion) {
      const e = state.entities.get(c.motion.id);
      if (!e) continue; // a motion of something we never saw in full: wait for its full
      Object.assign(e, { pos: c.motion.pos, rot: c.motion.rot, vel: c.motion.vel, region: u.region, at: now });
    }
  }
  for (const id of u.removed) {
    // Removed from this region's view; if it has since shown up in another region, keep it.
    const e = state.entities.get(id);
    if (e && key(e.region) === key(u.region)) state.entities.delete(id);
  }
  const me = state.agent && state.entities.get(state.agent);
  if (me) {
    const k = key(me.region);
    if (state.lastRegion && k !== state.lastRegion) {
      state.crossings += 1;
      say("viewer", `crossed into region ${k}`);
      setConn(`in region ${k} as ${state.agent}`, true);
    }
    state.lastRegion = k;
    if (me.kind && me.kind.avatar) state.flying = me.kind.avatar.flying;
  }
}

async function loadTerrain(info) {
  const bytes = Uint8Array.from(atob(info.terrain), (c) => c.charCodeAt(0));
  // Browsers have no zstd: the server unpacks the blob into the raw heightmap.
  const r = await fetch("/api/terrain", { method: "POST", body: bytes, headers: { "Content-Type": "application/octet-stream" } });
  if (!r.ok) {
    say("error", `terrain of ${key(info.region)}: ${(await r.json().catch(() => ({}))).error || r.status}`);
    return;
  }
  const view = new DataView(await r.arrayBuffer());
  const n = TERRAIN_SAMPLES;
  const img = new ImageData(n, n);
  const h = (x, y) => view.getFloat32(4 * (Math.min(n - 1, Math.max(0, y)) * n + Math.min(n - 1, Math.max(0, x))), true);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const height = h(x, y);
      // Light from the north-west: slopes facing it are brighter.
      const shade = Math.max(0.55, Math.min(1.3, 1 + 0.35 * ((h(x - 1, y) - h(x + 1, y)) - (h(x, y - 1) - h(x, y + 1)))));
      const [r0, g0, b0] = groundColour(height - info.water_level);
      // Image rows go down the screen; region y goes north (up).
      const o = 4 * ((n - 1 - y) * n + x);
      img.data[o] = Math.min(255, r0 * shade);
      img.data[o + 1] = Math.min(255, g0 * shade);
      img.data[o + 2] = Math.min(255, b0 * shade);
      img.data[o + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = n;
  off.height = n;
  off.getContext("2d").putImageData(img, 0, 0);
  state.terrains.set(key(info.region), { image: off, water: info.water_level });
}

function groundColour(above) {
  if (above < 0) {
    const d = Math.min(1, -above / 10);
    return [40 - 20 * d, 90 - 40 * d, 150 - 40 * d];
  }
  if (above < 1.5) return [194, 178, 128]; // beach
  if (above < 25) {
    const t = above / 25;
    return [70 + 40 * t, 130 - 20 * t, 60 + 10 * t];
  }
  if (above < 50) return [120, 100, 75];
  return [220, 220, 225];
}

// ---------- where things are ----------

function rotate(q, v) {
  // v' = v + 2w (u × v) + 2 u × (u × v), with u the vector part of the unit quaternion.
  const [x, y, z, w] = q;
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const u = [x, y, z];
  const t = cross(u, v).map((c) => 2 * c);
  const ut = cross(u, t);
  return [v[0] + w * t[0] + ut[0], v[1] + w * t[1] + ut[1], v[2] + w * t[2] + ut[2]];
}

function yaw(q) {
  const [x, y, z, w] = q;
  return Math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z));
}

// World position (metres) of an entity now, extrapolated with its velocity.
function worldPos(e, now, depth = 0) {
  const dt = Math.min(MAX_EXTRAPOLATE_S, Math.max(0, (now - e.at) / 1000));
  let p = [e.pos[0] + e.vel[0] * dt, e.pos[1] + e.vel[1] * dt, e.pos[2] + e.vel[2] * dt];
  if (e.parent && depth < 4) {
    const root = state.entities.get(e.parent);
    if (!root) return null;
    const rp = worldPos(root, now, depth + 1);
    if (!rp) return null;
    const off = rotate(root.rot, e.pos);
    return [rp[0] + off[0], rp[1] + off[1], rp[2] + off[2]];
  }
  return [REGION_SIZE * e.region.x + p[0], REGION_SIZE * e.region.y + p[1], p[2]];
}

// ---------- drawing ----------

function draw() {
  const now = performance.now();
  const w = canvas.width;
  const h = canvas.height;
  g.fillStyle = "#0b0e11";
  g.fillRect(0, 0, w, h);
  const me = state.agent && state.entities.get(state.agent);
  const centre = me ? worldPos(me, now) : null;
  const [cx, cy] = centre ? [centre[0], centre[1]] : [REGION_SIZE * 1.5, REGION_SIZE * 1.5];
  const S = state.scale;
  const sx = (wx) => w / 2 + (wx - cx) * S;
  const sy = (wy) => h / 2 - (wy - cy) * S;

  g.imageSmoothingEnabled = true;
  for (const [k, t] of state.terrains) {
    const [rx, ry] = k.split(",").map(Number);
    const x0 = sx(rx * REGION_SIZE);
    const y0 = sy((ry + 1) * REGION_SIZE);
    g.drawImage(t.image, x0, y0, REGION_SIZE * S, REGION_SIZE * S);
    g.strokeStyle = "rgba(255,255,255,0.55)";
    g.setLineDash([6, 6]);
    g.strokeRect(x0, y0, REGION_SIZE * S, REGION_SIZE * S);
    g.setLineDash([]);
    g.fillStyle = "rgba(255,255,255,0.8)";
    g.font = "13px system-ui, sans-serif";
    g.fillText(`region ${k}`, x0 + 6, y0 + 16);
  }

  if (centre) {
    g.strokeStyle = "rgba(95,179,249,0.35)";
    g.beginPath();
    g.arc(w / 2, h / 2, state.drawDistance * S, 0, 2 * Math.PI);
    g.stroke();
  }

  const avatars = [];
  for (const e of state.entities.values()) {
    const p = worldPos(e, now);
    if (!p) continue;
    if (e.kind && e.kind.avatar) {
      avatars.push([e, p]);
      continue;
    }
    const a = yaw(e.rot);
    g.save();
    g.translate(sx(p[0]), sy(p[1]));
    g.rotate(-a);
    g.fillStyle = e.kind && e.kind.object && e.kind.object.physical ? "#f2dc6b" : "#c9ced6";
    g.strokeStyle = "#1b1f24";
    const bw = Math.max(3, e.scale[0] * S);
    const bh = Math.max(3, e.scale[1] * S);
    if (e.shape === "Sphere" || e.shape === "Cylinder" || e.shape === "Torus") {
      g.beginPath();
      g.ellipse(0, 0, bw / 2, bh / 2, 0, 0, 2 * Math.PI);
      g.fill();
      g.stroke();
    } else {
      g.fillRect(-bw / 2, -bh / 2, bw, bh);
      g.strokeRect(-bw / 2, -bh / 2, bw, bh);
    }
    g.restore();
  }
  for (const [e, p] of avatars) {
    const mine = e.id === state.agent;
    const x = sx(p[0]);
    const y = sy(p[1]);
    const a = yaw(e.rot);
    g.fillStyle = mine ? "#5fb3f9" : "#f27d8e";
    g.beginPath();
    g.arc(x, y, Math.max(5, 0.6 * S), 0, 2 * Math.PI);
    g.fill();
    g.strokeStyle = "#fff";
    g.lineWidth = 2;
    g.beginPath();
    g.moveTo(x, y);
    g.lineTo(x + Math.cos(a) * 14, y - Math.sin(a) * 14);
    g.stroke();
    g.lineWidth = 1;
    g.fillStyle = "#fff";
    g.font = (mine ? "bold " : "") + "12px system-ui, sans-serif";
    g.fillText(e.name + (e.text ? " · " + e.text : ""), x + 9, y - 8);
  }

  updateStatus(me, centre);
  requestAnimationFrame(draw);
}

function updateStatus(me, p) {
  const st = $("status");
  if (!me || !p) {
    st.textContent = state.agent ? "waiting for the first update…" : "logging in…";
    return;
  }
  const local = me.pos;
  const text =
    `region ${key(me.region)} · local (${local[0].toFixed(1)}, ${local[1].toFixed(1)}, ${local[2].toFixed(1)}) m · ` +
    `world (${p[0].toFixed(1)}, ${p[1].toFixed(1)}) · ${state.flying ? "flying" : "walking"} · ` +
    `${state.entities.size} entities · seq ${state.seq.last} · gaps ${state.seq.gaps} · crossings ${state.crossings}` +
    (state.rttMs === null ? "" : ` · rtt ${state.rttMs.toFixed(1)} ms`);
  if (st.textContent !== text) st.textContent = text;
  // For tests and tools: the avatar's region and position as the last update told them.
  st.dataset.agent = state.agent;
  st.dataset.region = key(me.region);
  st.dataset.localX = String(local[0]);
  st.dataset.localY = String(local[1]);
  st.dataset.worldX = String(REGION_SIZE * me.region.x + local[0]);
  st.dataset.worldY = String(REGION_SIZE * me.region.y + local[1]);
  st.dataset.heading = String(yaw(me.rot));
  st.dataset.seq = String(state.seq.last);
  st.dataset.gaps = String(state.seq.gaps);
  st.dataset.crossings = String(state.crossings);
}

// ---------- keyboard ----------

const KEYS = {
  KeyW: "fwd", ArrowUp: "fwd", KeyS: "back", ArrowDown: "back",
  KeyA: "left", ArrowLeft: "left", KeyD: "right", ArrowRight: "right",
  KeyQ: "stepLeft", KeyE: "stepRight", Space: "up", KeyC: "down",
  ShiftLeft: "run", ShiftRight: "run",
};

function pushControls() {
  const h = state.held;
  const axis = (plus, minus) => (h.has(plus) ? 1 : 0) - (h.has(minus) ? 1 : 0);
  const c = {
    forward: axis("fwd", "back"),
    strafe: axis("stepLeft", "stepRight"),
    turn: axis("left", "right"),
    up: state.controls.fly ? axis("up", "down") : 0,
    jump: !state.controls.fly && h.has("up"),
    fly: state.controls.fly,
    run: h.has("run"),
  };
  if (JSON.stringify(c) !== JSON.stringify(state.controls)) {
    state.controls = c;
    sendControls();
  }
}

// Controls go out when they change, at most once per tick (docs/protocol.md): a change within
// the same tick is sent at the tick's end, as the latest state.
function sendControls() {
  const wait = state.lastControlsAt + 1000 / state.tickHz - performance.now();
  if (wait > 0) {
    if (!state.controlsTimer) {
      state.controlsTimer = setTimeout(() => {
        state.controlsTimer = null;
        sendControls();
      }, wait);
    }
    return;
  }
  state.lastControlsAt = performance.now();
  send({ controls: state.controls });
}

setInterval(() => {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const nonce = state.nextNonce++;
  state.pings.set(nonce, performance.now());
  // Unanswered pings of a past connection are forgotten.
  for (const n of state.pings.keys()) if (n < nonce - 8) state.pings.delete(n);
  send({ ping: { nonce } });
}, PING_EVERY_MS);

function typing() {
  return document.activeElement === $("chat-input");
}

window.addEventListener("keydown", (ev) => {
  if (typing()) return;
  if (ev.code === "Enter") {
    $("chat-input").focus();
    ev.preventDefault();
    return;
  }
  if (ev.code === "KeyF" && !ev.repeat) {
    state.controls = { ...state.controls, fly: !state.controls.fly };
    sendControls();
    return;
  }
  if (ev.key === "+" || ev.key === "=") state.scale = Math.min(8, state.scale * 1.25);
  if (ev.key === "-") state.scale = Math.max(0.5, state.scale / 1.25);
  const k = KEYS[ev.code];
  if (!k) return;
  ev.preventDefault();
  state.held.add(k);
  pushControls();
});

window.addEventListener("keyup", (ev) => {
  const k = KEYS[ev.code];
  if (!k) return;
  state.held.delete(k);
  pushControls();
});

// A window that loses focus never sees the key-ups: stop walking.
window.addEventListener("blur", () => {
  state.held.clear();
  pushControls();
});

// ---------- chat ----------

function say(who, text, channel) {
  const log = $("chat-log");
  const p = document.createElement("p");
  const b = document.createElement("b");
  b.textContent = who + (channel ? ` [${channel}]` : "");
  if (who === "error") p.className = "error";
  p.append(b, ": " + text);
  log.append(p);
  while (log.childElementCount > MAX_CHAT_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("chat-input").value.trim();
  if (text) send({ chat: { channel: 0, text } });
  $("chat-input").value = "";
  $("chat-input").blur();
});

connect();
requestAnimationFrame(draw);
