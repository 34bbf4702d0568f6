// The web console (/ui) in a real headless Chromium, driven by Playwright.
//
//   node tests/console/console.test.mjs [path/to/qroute]   (default target/release/qroute)
//
// Starts `qroute serve` on its embedded default with a random master key and
// a throw-away data directory, sends it real traffic (prompts from data/*.jsonl,
// a few streamed, some feedback), makes a user key, then checks in Chromium:
// the login (a wrong key is refused, the admin key signs in, only a token is
// kept), the overview's charts and totals against /v1/stats, the policy,
// models and keys pages, an experiment created from the form, seen filling up
// and stopped from the page, and that a user key sees no admin action.
// Saves a screenshot of each page in $SCREENSHOT_DIR (default
// target/console-screenshots/). Exits non-zero with a message on any failure.
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCREENSHOT_DIR.

import { spawn } from "node:child_process";
import { createReadStream, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = resolve(process.argv[2] || join(ROOT, "target/release/qroute"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = resolve(process.env.SCREENSHOT_DIR || join(ROOT, "target/console-screenshots"));
const MASTER = "sk-console-" + randomBytes(24).toString("hex");
const started = Date.now();

let server = null;
let serverLog = "";
let browser = null;
const tmp = mkdtempSync(join(tmpdir(), "qroute-console-"));

const log = (...a) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);
class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function firstLines(file, n) {
  const rows = [];
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim()) rows.push(JSON.parse(line));
    if (rows.length >= n) break;
  }
  rl.close();
  return rows;
}

let BASE = "";
async function call(path, { method = "GET", body, key = MASTER } = {}) {
  const r = await fetch(BASE + path, {
    method,
    headers: { authorization: "Bearer " + key, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60000),
  });
  const text = await r.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  return { status: r.status, data, headers: r.headers };
}
async function must(path, opts) {
  const r = await call(path, opts);
  check(r.status >= 200 && r.status < 300, `${opts?.method || "GET"} ${path}: HTTP ${r.status} ${JSON.stringify(r.data).slice(0, 300)}`);
  return r.data;
}

async function startServer() {
  const port = await freePort();
  BASE = `http://127.0.0.1:${port}`;
  log(`starting ${BIN} serve --listen 127.0.0.1:${port}`);
  server = spawn(BIN, ["serve", "--data-dir", join(tmp, "data"), "--listen", `127.0.0.1:${port}`], {
    env: { ...process.env, QROUTE_MASTER_KEY: MASTER, RUST_LOG: process.env.RUST_LOG || "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const keep = (b) => (serverLog = (serverLog + b.toString()).slice(-20000));
  server.stdout.on("data", keep);
  server.stderr.on("data", keep);
  let exited = null;
  server.on("exit", (code, sig) => (exited = code ?? sig));
  const deadline = Date.now() + 60000;
  for (;;) {
    check(exited === null, `qroute serve exited (${exited}) before answering /v1/health`);
    try {
      const r = await fetch(BASE + "/v1/health", { signal: AbortSignal.timeout(2000) });
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    check(Date.now() < deadline, "/v1/health did not answer within 60 s");
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** `n` routed requests (prompts from the datasets, a unit id each) with `concurrency` in flight. */
async function traffic(rows, n, offset = 0, concurrency = 4) {
  const ids = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const row = rows[(offset + i) % rows.length];
      const body = { prompt: row.prompt, user_id: `u${(offset + i) % 40}` };
      if (row.task) body.task_type = row.task;
      const d = await must("/v1/execute", { method: "POST", body });
      ids.push(d.request_id);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return ids;
}

async function streamed(rows, n) {
  for (let i = 0; i < n; i++) {
    const r = await fetch(BASE + "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: "Bearer " + MASTER, "content-type": "application/json" },
      body: JSON.stringify({ model: "auto", stream: true, messages: [{ role: "user", content: rows[i].prompt }] }),
    });
    check(r.ok, `streamed chat: HTTP ${r.status}`);
    await r.text();
  }
}

async function shot(page, name) {
  const path = join(SHOTS, name + ".png");
  await page.screenshot({ path, fullPage: true });
  log("screenshot", path);
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  await startServer();

  // The page shell: public, embedded, under a strict policy.
  const ui = await fetch(BASE + "/ui");
  check(ui.status === 200 && ui.headers.get("content-type").startsWith("text/html"), `/ui: ${ui.status} ${ui.headers.get("content-type")}`);
  const csp = ui.headers.get("content-security-policy") || "";
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `/ui content-security-policy: ${csp}`);
  const missing = await fetch(BASE + "/ui/nope.js");
  check(missing.status === 404 && (await missing.json()).error.type === "not_found", "/ui/nope.js is not the JSON 404");

  // Real traffic.
  const mmlu = await firstLines(join(ROOT, "data/routellm_mmlu_gsm8k.jsonl"), 80);
  const alpaca = await firstLines(join(ROOT, "data/alpaca_eval.jsonl"), 40);
  const rows = mmlu.slice(0, 40).flatMap((r, i) => [r, alpaca[i % alpaca.length]]).map((r) => ({ prompt: r.prompt, task: r.task }));
  const ids = await traffic(rows, 60);
  await streamed(rows, 4);
  for (const [i, id] of ids.slice(0, 12).entries()) {
    await must("/v1/feedback", { method: "POST", body: { request_id: id, thumbs: i % 3 === 0 ? "down" : "up" } });
  }
  const user = await must("/v1/keys", { method: "POST", body: { name: "console-user" } });
  log(`traffic: ${ids.length} requests, 4 streamed, 12 feedback; user key ${user.id}`);
  const secrets = [MASTER, user.key];

  // Chromium, fresh profile.
  const profile = join(tmp, "chromium-profile");
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const problems = [];
  const watch = (page, who) => {
    page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
    page.on("console", (m) => {
      const t = m.text();
      if (/Content Security Policy|Refused to/i.test(t)) problems.push(`${who}: ${t}`);
    });
    page.on("request", (r) => {
      for (const s of secrets) if (r.url().includes(s)) problems.push(`${who}: a key in a URL: ${r.url()}`);
    });
    page.on("dialog", (d) => d.accept());
  };
  const page = browser.pages()[0] || (await browser.newPage());
  watch(page, "admin");
  page.setDefaultTimeout(20000);

  // Login: a wrong key is refused, the admin key signs in.
  await page.goto(BASE + "/ui");
  await page.locator("#login-form").waitFor();
  await shot(page, "01-login");
  await page.fill("#login-key", "sk-qr-not-a-key");
  await page.click("#login-submit");
  await page.locator("#login-error").waitFor();
  const err = await page.textContent("#login-error");
  check(/not accepted/i.test(err), `a wrong key: the login says ${JSON.stringify(err)}`);
  check(await page.locator("#bar").isHidden(), "a wrong key got past the login");
  await shot(page, "02-login-refused");
  await page.fill("#login-key", MASTER);
  await page.click("#login-submit");
  await page.locator("#bar").waitFor();
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  check(!stored.includes(MASTER), "the key itself was kept in sessionStorage");
  check(stored.includes("qroute.token"), "no token in sessionStorage");
  check((await page.evaluate(() => localStorage.length)) === 0, "localStorage was written");
  check(await page.locator("#who .badge.admin").isVisible(), "the admin key is not shown as an admin");
  log("login: a wrong key refused, the admin key signed in, only a token kept");

  // Overview: totals from /v1/stats, charts drawn.
  const stats = await must("/v1/stats?window_s=3600&bucket_s=60");
  check(stats.totals.requests > 0, `/v1/stats counts no request: ${JSON.stringify(stats.totals)}`);
  await page.locator('[data-stat="requests"]').waitFor();
  const shown = Number(await page.getAttribute('[data-stat="requests"]', "data-value"));
  check(shown === stats.totals.requests, `the overview shows ${shown} requests, /v1/stats says ${stats.totals.requests}`);
  for (const id of ["chart-traffic", "chart-quality", "chart-latency", "chart-share"]) {
    await page.locator(`#${id} canvas`).first().waitFor({ state: "attached" });
    const drawn = await page.locator(`#${id} .u-series`).count();
    check(drawn >= 2, `#${id}: ${drawn} legend entries`);
  }
  const method = await page.textContent("#savings-method");
  check(method.includes(stats.savings.method), `the savings method shown is ${JSON.stringify(method)}`);
  await shot(page, "03-overview");
  log(`overview: ${shown} requests as /v1/stats says; four charts; the savings method shown`);

  // Policy.
  await page.goto(BASE + "/ui#/policy");
  await page.locator("#policy-versions table, #policy-versions p").first().waitFor();
  await page.locator("#chart-learning canvas, #chart-learning .empty").first().waitFor({ state: "attached" });
  const reg = await must("/v1/admin/policies");
  const listed = await page.locator("#policy-versions tr[data-version]").count();
  check(listed === reg.versions.length, `policy page lists ${listed} versions, the registry has ${reg.versions.length}`);
  await shot(page, "04-policy");
  log(`policy: ${listed} registry versions listed`);

  // Models and providers.
  await page.goto(BASE + "/ui#/models");
  await page.locator("tr[data-model]").first().waitFor();
  const caps = await must("/v1/capabilities");
  check((await page.locator("tr[data-model]").count()) === caps.models.length, "models page: not every configured model");
  await page.locator('[data-stat="cache"]').waitFor();
  await shot(page, "05-models");
  log(`models: ${caps.models.length} models with breaker states; cache card`);

  // Keys.
  await page.goto(BASE + "/ui#/keys");
  await page.locator(`tr[data-key="${user.id}"]`).waitFor();
  await shot(page, "06-keys");
  log("keys: the user key listed");

  // An experiment from the form: created, filling up, stopped.
  await page.goto(BASE + "/ui#/experiments");
  await page.locator("#create-experiment").waitFor();
  await page.locator('#create-experiment select[name="model"] option').first().waitFor({ state: "attached" });
  await page.fill('#create-experiment input[name="id"]', "console-e1");
  await page.fill('#create-experiment input[name="description"]', "made by the console test");
  const arms = page.locator("#arms .arm");
  await arms.nth(1).locator('select[name="kind"]').selectOption("fixed");
  await arms.nth(1).locator('select[name="model"]').selectOption("mistralai/Mixtral-8x7B-Instruct-v0.1");
  await arms.nth(1).locator('input[name="name"]').fill("mixtral");
  await shot(page, "07-experiment-form");
  await page.click("#create-submit");
  await page.waitForURL(/#\/experiments\/console-e1$/);
  await page.locator('[data-stat="experiment-status"][data-value="running"]').waitFor();
  const made = await must("/v1/experiments/console-e1");
  check(made.experiment.spec.arms[1].strategy.model === "mistralai/Mixtral-8x7B-Instruct-v0.1", `the form posted ${JSON.stringify(made.experiment.spec)}`);
  const inPage = async () => {
    const cells = await page.locator("td[data-requests]").evaluateAll((tds) => tds.map((t) => Number(t.dataset.requests)));
    return cells.reduce((a, b) => a + b, 0);
  };
  const before = await inPage();
  await traffic(rows, 40, 7);
  const deadline = Date.now() + 20000;
  let after = before;
  while ((after = await inPage()) < before + 40) {
    check(Date.now() < deadline, `the arms' requests in the page went from ${before} to ${after}, not up by 40`);
    await page.waitForTimeout(500);
  }
  const counts = await page.locator("td[data-requests]").evaluateAll((tds) => tds.map((t) => Number(t.dataset.requests)));
  check(counts.every((c) => c > 0), `an arm got no request: ${counts}`);
  await page.locator("#arm-chart svg circle").first().waitFor({ state: "attached" });
  await shot(page, "08-experiment-running");
  log(`experiment: made from the form; per-arm requests in the page ${before} → ${after} (${counts.join(" + ")})`);
  await page.click("#stop-experiment");
  await page.locator('[data-stat="experiment-status"][data-value="stopped"]').waitFor();
  check(await page.locator("#stop-experiment").isHidden(), "the stop button stays after stopping");
  check((await must("/v1/experiments/console-e1")).status === "stopped", "the API does not say stopped");
  await shot(page, "09-experiment-stopped");
  log("experiment: stopped from the page");

  // A user key: no admin action anywhere.
  const upage = await browser.newPage();
  watch(upage, "user");
  upage.setDefaultTimeout(20000);
  await upage.goto(BASE + "/ui");
  await upage.fill("#login-key", user.key);
  await upage.click("#login-submit");
  await upage.locator("#bar").waitFor();
  await upage.locator('[data-stat="status"]').waitFor();
  const nav = await upage.locator("#nav a").allTextContents();
  check(JSON.stringify(nav) === JSON.stringify(["Overview", "Models"]), `a user key's navigation: ${nav}`);
  const adminThings = '[data-action="rollback"], #stop-experiment, #create-experiment, #key-table, #policy-versions, a[href="#/keys"]';
  await shot(upage, "10-user-overview");
  for (const hash of ["#/keys", "#/policy", "#/experiments", "#/experiments/console-e1", "#/models"]) {
    await upage.goto(BASE + "/ui" + hash);
    await upage.locator("#page > *").first().waitFor();
    await upage.waitForTimeout(300);
    const n = await upage.locator(adminThings).count();
    check(n === 0, `a user key sees ${n} admin element(s) at ${hash}`);
  }
  await upage.locator("tr[data-model]").first().waitFor();
  check((await upage.locator("#cache-cards").count()) === 0, "a user key sees admin statistics on the models page");
  await shot(upage, "11-user-models");
  log("user key: Overview and Models only, no admin action on any route");

  // A token the gateway does not accept sends the page back to the login.
  await upage.evaluate(() => sessionStorage.setItem("qroute.token", "not-a-token"));
  await upage.reload();
  await upage.locator("#login-form").waitFor();
  check(await upage.locator("#bar").isHidden(), "a bad token did not lead back to the login");
  log("a bad token: back to the login");

  check(problems.length === 0, "in the browser:\n  " + problems.join("\n  "));
}

let code = 0;
try {
  await main();
  log(`console test: PASS (screenshots in ${SHOTS})`);
} catch (e) {
  code = 1;
  console.error(`\nconsole test: FAIL ${e instanceof Failure ? e.message : e.stack || e}`);
  if (serverLog) console.error("--- last lines of the server log ---\n" + serverLog.split("\n").slice(-30).join("\n"));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
