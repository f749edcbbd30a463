// The cluster dashboard in a real browser against a real `terrane run`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTerrane, startBrowser, screenshot, eventually } from "./harness.mjs";

let grid;
let browser;

before(async () => {
  grid = await startTerrane();
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await grid?.stop();
});

test("the dashboard shows nine regions on two hosts", async () => {
  const { page } = browser;
  await page.goto(`${grid.base}/#token=${grid.token}`);
  const counted = await eventually(
    () => page.evaluate(() => {
      const regions = document.querySelectorAll(".region").length;
      const hosts = document.querySelectorAll(".host").length;
      return regions === 9 && hosts === 2 ? { regions, hosts } : null;
    }),
    15_000,
  );
  await screenshot(page, "dashboard");
  assert.ok(counted, "the dashboard never showed 9 regions and 2 hosts");
  const placed = await page.evaluate(() =>
    [...document.querySelectorAll(".region")].map((r) => [r.dataset.region, r.dataset.host]),
  );
  assert.deepEqual(new Set(placed.map(([, h]) => h)), new Set(grid.hosts), "regions are on the two hosts");
  assert.equal(await page.locator("#conn").textContent(), "live");
  assert.deepEqual(browser.errors, []);
});

test("a migration started without the control token is refused with a clear message", async () => {
  const { page } = browser;
  await page.goto(`${grid.base}/`);
  await page.locator('.region[data-region="0,0"]').click();
  await page.locator("#migrate").click();
  const shown = await eventually(async () => {
    const text = await page.locator("#message").textContent();
    return text && text.startsWith("refused") ? text : null;
  }, 10_000);
  await screenshot(page, "dashboard-refused");
  assert.ok(shown, "no refusal was shown");
  assert.match(shown, /refused \(401\)/);
  assert.match(shown, /control token/);
  // Nothing moved.
  const log = await page.locator("tr.migration").count();
  assert.equal(log, 0, "no migration may start without the token");
});

test("a migration started from the page shows in the log with its freeze time and recolours the region", async () => {
  const { page } = browser;
  await page.goto(`${grid.base}/#token=${grid.token}`);
  const cell = page.locator('.region[data-region="1,1"]');
  await cell.waitFor();
  await cell.click();
  const before = await cell.evaluate((e) => ({ host: e.dataset.host, colour: getComputedStyle(e).backgroundColor }));
  const target = await page.locator("#target").inputValue();
  assert.notEqual(target, before.host, "the target offered is the other host");
  await page.locator("#migrate").click();

  // As soon as the log shows it: the dashboard during a migration.
  const row = page.locator('tr.migration[data-region="1,1"]');
  await row.first().waitFor({ timeout: 15_000 });
  await screenshot(page, "dashboard-migrating");
  const message = await page.locator("#message").textContent();
  assert.match(message, /migration \d+ of region 1,1 from \S+ to \S+ started/);

  const done = await eventually(
    () => page.evaluate(() => {
      const r = document.querySelector('tr.migration[data-region="1,1"]');
      return r && r.dataset.outcome !== "running" && r.dataset.freezeMs !== ""
        ? { outcome: r.dataset.outcome, freeze: Number(r.dataset.freezeMs), shown: r.querySelector(".freeze").textContent }
        : null;
    }),
    30_000,
  );
  assert.ok(done, "the migration never settled in the log");
  assert.equal(done.outcome, "committed");
  assert.ok(Number.isFinite(done.freeze) && done.freeze > 0, `a freeze time: ${JSON.stringify(done)}`);
  assert.match(done.shown, /^\d+(\.\d+)? ms$/);

  const after = await eventually(
    () => cell.evaluate((e, was) => (e.dataset.host !== was ? { host: e.dataset.host, colour: getComputedStyle(e).backgroundColor } : null), before.host),
    15_000,
  );
  await screenshot(page, "dashboard-migrated");
  assert.ok(after, "the region never showed its new host");
  assert.equal(after.host, target);
  assert.notEqual(after.colour, before.colour, "the region is recoloured with its new host's colour");
  assert.deepEqual(browser.errors, []);
});

test("draining a host from the page moves all its regions to the other host, one at a time", async () => {
  const { page } = browser;
  await page.goto(`${grid.base}/#token=${grid.token}`);
  await page.locator(".host").first().waitFor();
  const hosts = await page.evaluate(() =>
    [...document.querySelectorAll(".host")].map((h) => ({
      name: h.dataset.host,
      regions: [...document.querySelectorAll(`.region[data-host="${h.dataset.host}"]`)].length,
    })),
  );
  const drained = hosts.find((h) => h.regions > 0);
  const other = hosts.find((h) => h.name !== drained.name);
  const before = await page.locator("tr.migration").count();
  await page.locator(`.host[data-host="${drained.name}"] button.drain`).click();
  await eventually(async () => (await page.locator("tr.migration").count()) > before, 15_000, 20);
  await screenshot(page, "dashboard-draining");
  const message = await page.locator("#message").textContent();
  assert.match(message, new RegExp(`draining ${drained.name}: its ${drained.regions} regions move one at a time`));

  const empty = await eventually(
    () => page.evaluate(
      ([from, to]) => {
        const cells = [...document.querySelectorAll(".region")];
        return cells.length === 9 && cells.every((c) => c.dataset.host === to) && !cells.some((c) => c.dataset.host === from);
      },
      [drained.name, other.name],
    ),
    60_000,
    200,
  );
  await screenshot(page, "dashboard-drained");
  assert.ok(empty, `${drained.name} was never emptied`);
  const rows = await page.evaluate(() => [...document.querySelectorAll("tr.migration")].map((r) => r.dataset.outcome));
  assert.equal(rows.length, before + drained.regions, "one migration per region of the drained host");
  assert.ok(rows.every((o) => o === "committed"), `every migration committed: ${rows}`);
  const hostLine = await page.locator(`.host[data-host="${drained.name}"]`).textContent();
  assert.match(hostLine, / 0 regions/);
  // The server's view agrees: the directory places nothing on the drained host any more.
  const served = await eventually(async () => {
    const c = await (await fetch(`${grid.base}/api/cluster`)).json();
    const h = c.hosts.find((h) => h.name === drained.name);
    return h.regions === 0 && c.regions.every((r) => r.host === other.name) ? c : null;
  }, 10_000);
  assert.ok(served, `${drained.name} still runs regions according to /api/cluster`);
});
