// Shared by the browser tests: starts a real `terrane run` on free ports and Debian's headless
// Chromium with a fresh profile, and saves screenshots as artifacts.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = process.env.ARTIFACTS_DIR || join(here, "artifacts");
// How long `terrane run` may take to print its addresses.
const START_TIMEOUT_MS = 60_000;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Starts `terrane run` on free ports; resolves to { base, token, hosts, stop }. */
export async function startTerrane(extraArgs = []) {
  const bin = process.env.TERRANE_BIN;
  if (!bin) throw new Error("TERRANE_BIN is not set: run these tests through scripts/suites/browser.sh");
  // The token is made fresh by `terrane run` and read from what it prints.
  const env = { ...process.env };
  delete env.TERRANE_CONTROL_TOKEN;
  const child = spawn(
    bin,
    // --no-autoplace: the tests move regions themselves; the orchestrator only drains and fails over.
    // --fresh in a data directory of its own: each test starts from the same new world.
    [
      "run", "--listen", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--for", "10m", "--objects", "60",
      "--no-autoplace", "--fresh", "--data", mkdtempSync(join(tmpdir(), "terrane-browser-")), ...extraArgs,
    ],
    { stdio: ["ignore", "pipe", "inherit"], env },
  );
  const lines = createInterface({ input: child.stdout });
  const found = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("terrane run printed no dashboard URL in time")), START_TIMEOUT_MS);
    const seen = {};
    child.on("exit", (code) => reject(new Error(`terrane run exited early with ${code}`)));
    lines.on("line", (line) => {
      // terrane: hosts A and B; move a region with: …
      const hosts = line.match(/^terrane: hosts (\S+) and (\S+);/);
      if (hosts) seen.hosts = [hosts[1], hosts[2]];
      // terrane: dashboard http://ADDR/#token=TOKEN · viewer http://ADDR/viewer
      const dash = line.match(/^terrane: dashboard (http:\/\/[^/]+)\/#token=(\S+)/);
      if (dash) {
        clearTimeout(timer);
        resolve({ ...seen, base: dash[1], token: dash[2] });
      }
    });
  });
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return { ...found, stop };
}

/** Debian's Chromium, headless, with a fresh profile; resolves to { context, page, close }. */
export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "terrane-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1400, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, errors, close };
}

/** Saves a screenshot of the page as ARTIFACTS/NAME.png. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name + ".png");
  await page.screenshot({ path });
  return path;
}

/** Polls `probe` until it returns a truthy value, for at most `ms`; returns that value or null. */
export async function eventually(probe, ms, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, every));
  }
}
