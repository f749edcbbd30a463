// The cluster dashboard: the grid coloured by host, the hosts, a live log and timeline of
// migrations, and the two actions (migrate a region, drain a host). Everything arrives over the
// live WebSocket (/api/live); actions go to /api/migrate and /api/drain with the control token.
"use strict";

const PALETTE = ["#5fb3f9", "#f9a65f", "#8be28b", "#d98bf0", "#f2dc6b", "#6be0d3", "#f27d8e", "#b7b7ff"];
const TICK_MS = 1000 / 45;
const MAX_LOG_ROWS = 200;
const MAX_TIMELINE_BARS = 28;

const $ = (id) => document.getElementById(id);
const state = {
  cluster: null,
  hostColour: new Map(),
  migrations: new Map(), // id -> { m, seen: Date }
  selected: null,
};

// The control token comes from the URL `terrane run` prints (/#token=…) or is typed in.
function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    $("token").value = decodeURIComponent(m[1]);
  }
}
takeToken();
window.addEventListener("hashchange", takeToken);

function colourOf(host) {
  if (!state.hostColour.has(host)) {
    state.hostColour.set(host, PALETTE[state.hostColour.size % PALETTE.length]);
  }
  return state.hostColour.get(host);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function fmtBytes(b) {
  if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
  if (b >= 1 << 10) return (b / 1024).toFixed(1) + " KiB";
  return b + " B";
}

function fmtMs(v) {
  return v == null ? "–" : v.toFixed(v < 10 ? 2 : 1) + " ms";
}

function outcome(m) {
  return !m.done ? "running" : m.committed ? "committed" : "aborted";
}

function renderCluster(c) {
  state.cluster = c;
  // Colours follow host names in a stable order, so a host keeps its colour.
  for (const h of [...c.hosts].sort((a, b) => a.name.localeCompare(b.name))) colourOf(h.name);
  const running = new Set([...state.migrations.values()].filter((e) => !e.m.done).map((e) => e.m.region));

  const map = $("map");
  const maxX = Math.max(0, ...c.regions.map((r) => r.x));
  const maxY = Math.max(0, ...c.regions.map((r) => r.y));
  const minX = Math.min(...c.regions.map((r) => r.x));
  const minY = Math.min(...c.regions.map((r) => r.y));
  map.style.gridTemplateColumns = `repeat(${maxX - minX + 1}, 1fr)`;
  map.replaceChildren();
  const byPos = new Map(c.regions.map((r) => [r.x + "," + r.y, r]));
  // North is up: the highest y is the first row.
  for (let y = maxY; y >= minY; y--) {
    for (let x = minX; x <= maxX; x++) {
      const r = byPos.get(x + "," + y);
      if (!r) {
        map.append(el("div"));
        continue;
      }
      const load = r.budget_ms > 0 ? Math.min(1, r.tick_p99_ms / r.budget_ms) : 0;
      const cell = el(
        "div",
        {
          class: "region" + (state.selected === r.region ? " selected" : "") + (running.has(r.region) ? " moving" : ""),
          "data-region": r.region,
          "data-host": r.host,
          "data-epoch": String(r.epoch),
          style: `background-color: ${colourOf(r.host)}`,
          title: `${r.region} on ${r.host}, epoch ${r.epoch}`,
        },
        el("div", { class: "name" }, r.region),
        el("div", {}, `${r.avatars} avatars · ${r.entities} entities`),
        el("div", {}, `tick p99 ${r.tick_p99_ms.toFixed(2)} / ${r.budget_ms.toFixed(1)} ms`),
        el("div", {}, `epoch ${r.epoch}`),
        el("div", { class: "bar" }, el("i", { style: `width: ${(load * 100).toFixed(1)}%` })),
      );
      cell.addEventListener("click", () => select(r.region));
      map.append(cell);
    }
  }

  const hosts = $("hosts");
  hosts.replaceChildren();
  for (const h of c.hosts) {
    const drain = el("button", { class: "drain", textContent: "Drain" });
    drain.addEventListener("click", () => act("/api/drain", { host: h.name }));
    hosts.append(
      el(
        "div",
        { class: "host" + (h.up ? "" : " down"), "data-host": h.name },
        el("span", { class: "swatch", style: `background: ${colourOf(h.name)}` }),
        el(
          "div",
          {},
          el(
            "div",
            {},
            `${h.name} · ${c.regions.filter((r) => r.host === h.name).length} regions · ${h.cores} cores · ${(h.load * 100).toFixed(1)} % busy${h.up ? "" : " · not answering"} · `,
            el("a", { href: h.api + "/regions", target: "_blank", textContent: "API" }),
          ),
          el("div", { class: "load" }, el("i", { style: `width: ${Math.min(100, h.load * 100).toFixed(1)}%` })),
        ),
        drain,
      ),
    );
  }

  fillSelect($("region"), c.regions.map((r) => r.region), state.selected);
  const current = c.regions.find((r) => r.region === $("region").value);
  const others = c.hosts.map((h) => h.name).filter((n) => !current || n !== current.host);
  fillSelect($("target"), others, $("target").value);

  // The cluster push can be older than the last migration event: it only adds news.
  for (const m of c.migrations) {
    const known = state.migrations.get(m.id);
    if (!known || progress(m) > progress(known.m)) noteMigration(m);
  }
}

function progress(m) {
  return (m.done ? 1e6 : 0) + (m.freeze_ms != null ? 1e5 : 0) + m.rounds;
}

function fillSelect(sel, values, keep) {
  const want = values.includes(keep) ? keep : sel.value && values.includes(sel.value) ? sel.value : values[0];
  sel.replaceChildren(...values.map((v) => el("option", { value: v, textContent: v })));
  if (want !== undefined) sel.value = want;
}

function select(region) {
  state.selected = region;
  $("region").value = region;
  if (state.cluster) renderCluster(state.cluster);
}

$("region").addEventListener("change", () => select($("region").value));

// A migration news item: insert or update its log row and the timeline.
function noteMigration(m) {
  const known = state.migrations.get(m.id);
  if (known && JSON.stringify(known.m) === JSON.stringify(m)) return;
  state.migrations.set(m.id, { m, seen: known ? known.seen : new Date() });
  while (state.migrations.size > MAX_LOG_ROWS) state.migrations.delete(state.migrations.keys().next().value);
  renderLog();
  drawTimeline();
  if (state.cluster && m.done && m.committed) {
    // A committed migration moved its region at the directory's compare-and-swap (epoch + 1):
    // show it now rather than at the next push of the whole cluster.
    const r = state.cluster.regions.find((r) => r.region === m.region);
    if (r && r.host === m.from) {
      r.host = m.to;
      r.epoch += 1;
    }
  }
  if (state.cluster && (!known || known.m.done !== m.done)) {
    // The region's cell shows "moving" only while the migration runs.
    renderCluster(state.cluster);
  }
}

function renderLog() {
  const rows = [...state.migrations.values()].reverse().map(({ m, seen }) =>
    el(
      "tr",
      { class: "migration " + outcome(m), "data-id": m.id, "data-region": m.region, "data-outcome": outcome(m), "data-freeze-ms": m.freeze_ms == null ? "" : String(m.freeze_ms) },
      el("td", {}, seen.toLocaleTimeString()),
      el("td", {}, m.region),
      el("td", {}, `${m.from} → ${m.to}`),
      el("td", { title: m.abort_reason || "" }, outcome(m) + (m.abort_reason ? ": " + m.abort_reason : "")),
      el("td", {}, m.phase),
      el("td", { class: "freeze" }, fmtMs(m.freeze_ms)),
      el("td", {}, fmtMs(m.total_ms)),
      el("td", {}, String(m.rounds)),
      el("td", { title: "per round: " + m.bytes_per_round.map(fmtBytes).join(", ") }, fmtBytes(m.bytes)),
    ),
  );
  $("log").replaceChildren(...rows);
}

function drawTimeline() {
  const cv = $("timeline");
  const g = cv.getContext("2d");
  const w = cv.width;
  const h = cv.height;
  g.clearRect(0, 0, w, h);
  const done = [...state.migrations.values()].filter((e) => e.m.freeze_ms != null).slice(-MAX_TIMELINE_BARS);
  const top = Math.max(TICK_MS * 1.5, ...done.map((e) => e.m.freeze_ms));
  const base = h - 18;
  const y = (ms) => base - (ms / top) * (base - 10);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#8a96a3";
  g.fillText(top.toFixed(0) + " ms", 4, 12);
  g.strokeStyle = "#8a96a3";
  g.setLineDash([4, 4]);
  g.beginPath();
  g.moveTo(0, y(TICK_MS));
  g.lineTo(w, y(TICK_MS));
  g.stroke();
  g.setLineDash([]);
  if (done.length === 0) {
    g.fillText("no migration yet", 4, base);
    return;
  }
  const slot = w / MAX_TIMELINE_BARS;
  done.forEach(({ m }, i) => {
    const x = i * slot + 2;
    g.fillStyle = m.committed ? colourOf(m.to) : "#ff6b6b";
    g.fillRect(x, y(m.freeze_ms), Math.max(2, slot - 4), Math.max(1, base - y(m.freeze_ms)));
    g.fillStyle = "#dde3ea";
    g.fillText(m.freeze_ms.toFixed(1), x, y(m.freeze_ms) - 3);
    g.fillStyle = "#8a96a3";
    g.fillText(m.region, x, h - 4);
  });
}

function message(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
}

async function act(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) {
      message(answer.message || "started", "ok");
    } else {
      message(`refused (${r.status}): ${answer.error || r.statusText}`, "error");
    }
  } catch (e) {
    message("cannot reach the server: " + e, "error");
  }
}

$("migrate").addEventListener("click", () => {
  const region = $("region").value;
  const to = $("target").value;
  if (!region || !to) {
    message("pick a region and a host to move it to", "error");
    return;
  }
  act("/api/migrate", { region, to });
});

function connect(delay) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  ws.onopen = () => {
    $("conn").textContent = "live";
    $("conn").className = "conn up";
    delay = 500;
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.cluster) renderCluster(msg.cluster);
    else if (msg.migration) noteMigration(msg.migration);
    else if (msg.error) message(msg.error, "error");
  };
  ws.onclose = () => {
    $("conn").textContent = "reconnecting…";
    $("conn").className = "conn";
    setTimeout(() => connect(Math.min(delay * 2, 8000)), delay);
  };
}

drawTimeline();
connect(500);
