// The qroute console: one module, no build step. Every number on a page
// comes from the gateway's authenticated API, called with the bearer token
// that `POST /v1/auth/login` gave for the key typed at login. Only that token
// is kept (sessionStorage); the key is dropped at once, and neither ever goes
// into a URL. A 401 from any call ends the session and shows the login.
//
// Pages (hash routes): #/overview, #/policy, #/experiments[/ID], #/models,
// #/keys. A key that is not an admin's (GET /v1/auth/me) gets the overview's
// health, the models' breaker states and nothing that needs an admin.

const TOKEN = "qroute.token";
const REFRESH_MS = 5000;

// ------------------------------------------------------------------ helpers

/** An element with attributes (`class`, `text`, `on*` handlers, the rest as attributes) and children. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const $ = (id) => document.getElementById(id);

const num = (x, d = 0) =>
  x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const usd = (x) => {
  if (x === null || x === undefined) return "–";
  const a = Math.abs(x);
  const d = a === 0 ? 2 : a >= 100 ? 2 : a >= 1 ? 3 : a >= 0.01 ? 4 : 6;
  return (x < 0 ? "-$" : "$") + a.toFixed(d);
};
const pct = (x, d = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(d) + "%");
const ms = (x) => (x === null || x === undefined ? "–" : x >= 1000 ? (x / 1000).toFixed(2) + " s" : Math.round(x) + " ms");
const q = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const ago = (t) => {
  if (!t) return "–";
  const s = Math.max(0, (Date.now() - t) / 1000);
  return s < 90 ? Math.round(s) + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : s < 129600 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " d ago";
};
const PALETTE = ["#2f6fde", "#e8710a", "#1a7f4b", "#c0362c", "#6b4fd8", "#0f9aa8", "#b26b00", "#d6336c", "#5c7080", "#7cb342", "#8d6e63", "#00897b", "#3949ab"];

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.authorization = "Bearer " + token;
  if (body !== undefined) headers["content-type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, "the gateway did not answer (" + e.message + ")");
  }
  let data = null;
  try {
    data = await r.json();
  } catch {
    data = null;
  }
  if (r.status === 401) {
    signOut(token ? "Your session ended; sign in again." : null);
    throw new ApiError(401, "unauthorized");
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.error && data.error.message) || `${method} ${path}: HTTP ${r.status}`);
  return data;
}

// ------------------------------------------------------------ the session

const session = { me: null };

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  session.me = null;
  stopPage();
  $("bar").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("login-key").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $("login-key");
  const key = input.value.trim();
  input.value = "";
  const err = $("login-error");
  err.hidden = true;
  if (!key) return;
  $("login-submit").disabled = true;
  try {
    const r = await fetch("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ api_key: key }),
      cache: "no-store",
      credentials: "omit",
    });
    const data = await r.json().catch(() => null);
    if (!r.ok || !data || !data.access_token) {
      const m = (data && data.error && data.error.message) || `HTTP ${r.status}`;
      throw new Error(r.status === 401 ? "That key was not accepted: " + m : m);
    }
    sessionStorage.setItem(TOKEN, data.access_token);
    await start();
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  } finally {
    $("login-submit").disabled = false;
  }
}

/** Whoever the token (or no credential, where auth is off) is: the app, or the login. */
async function start() {
  try {
    session.me = await api("/v1/auth/me");
  } catch (e) {
    if (e.status !== 401) {
      $("login").hidden = false;
      $("login-error").textContent = e.message;
      $("login-error").hidden = false;
    }
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("bar").hidden = false;
  // With auth off (no master key) there is no session to end.
  $("logout").hidden = !sessionStorage.getItem(TOKEN);
  const me = session.me;
  const who = $("who");
  who.replaceChildren(me.name || me.key_id || (me.admin ? "master key" : "key"), " ", me.admin ? el("span", { class: "badge admin", text: "admin" }) : "");
  buildNav();
  route();
}

// --------------------------------------------------------------- routing

const PAGES = [
  { id: "overview", title: "Overview", admin: false, render: overview },
  { id: "policy", title: "Policy", admin: true, render: policyPage },
  { id: "experiments", title: "Experiments", admin: true, render: experimentsPage },
  { id: "models", title: "Models", admin: false, render: modelsPage },
  { id: "keys", title: "Keys", admin: true, render: keysPage },
];
const allowed = () => PAGES.filter((p) => !p.admin || (session.me && session.me.admin));

function buildNav() {
  $("nav").replaceChildren(...allowed().map((p) => el("a", { href: "#/" + p.id, "data-page": p.id, text: p.title })));
}

let current = null; // { timer, charts: Map, alive }

function stopPage() {
  if (!current) return;
  current.alive = false;
  clearTimeout(current.timer);
  for (const c of current.charts.values()) c.destroy();
  current = null;
}

function route() {
  if (!session.me) return;
  const [, name = "overview", ...rest] = location.hash.replace(/^#/, "").split("/");
  const page = allowed().find((p) => p.id === name) || allowed()[0];
  for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("active", a.dataset.page === page.id);
  stopPage();
  const ctx = { alive: true, charts: new Map(), timer: 0 };
  current = ctx;
  const root = $("page");
  root.replaceChildren();
  root.dataset.page = page.id;
  banner(null);
  const update = page.render(root, ctx, rest.map(decodeURIComponent));
  const tick = async () => {
    if (!ctx.alive) return;
    try {
      await update();
      if (ctx.alive) banner(null);
    } catch (e) {
      if (ctx.alive && e.status !== 401) banner(e.message);
    }
    if (ctx.alive) ctx.timer = setTimeout(tick, ctx.refreshMs || REFRESH_MS);
  };
  tick();
}

function banner(message) {
  const b = $("banner");
  b.hidden = !message;
  b.textContent = message || "";
}

// ----------------------------------------------------------------- charts

/**
 * A time chart (uPlot) in `box`, kept per page under `key` and updated in
 * place on refresh. `series`: [{label, values, color?, scale?, fmt?}]; `xs`:
 * Unix ms.
 */
function timeChart(ctx, box, key, xs, series, { height = 220, scales = {}, axes } = {}) {
  const data = [xs.map((t) => t / 1000), ...series.map((s) => s.values)];
  const shape = series.map((s) => s.label + "|" + (s.scale || "y")).join(",");
  const old = ctx.charts.get(key);
  if (old && old._shape === shape && old.root.isConnected) {
    old.setData(data);
    return old;
  }
  if (old) old.destroy();
  box.replaceChildren();
  if (xs.length === 0) {
    box.append(el("div", { class: "empty", text: "no data in this window yet" }));
    ctx.charts.delete(key);
    return null;
  }
  const used = [...new Set(series.map((s) => s.scale || "y"))];
  const opts = {
    width: Math.max(320, box.clientWidth || 560),
    height,
    cursor: { drag: { x: true, y: false } },
    // A single moment gets a few minutes either side, not years.
    scales: { x: { time: true, range: (u, min, max) => (max - min < 60 ? [min - 300, max + 300] : [min, max]) }, ...scales },
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        scale: s.scale || "y",
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: 2,
        spanGaps: true,
        // Dots where the values are few (a line needs two).
        points: { show: s.values.filter((v) => v !== null && v !== undefined).length <= 40, size: 6 },
        value: (u, v) => (v === null || v === undefined ? "–" : s.fmt ? s.fmt(v) : Number(v).toPrecision(3)),
      })),
    ],
    axes: axes || [
      {},
      ...used.map((sc, i) => ({
        scale: sc,
        side: i === 0 ? 3 : 1,
        grid: { show: i === 0 },
        size: 72,
        values: (u, vals) => vals.map((v) => ((series.find((s) => (s.scale || "y") === sc) || {}).axisFmt || String)(v)),
      })),
    ],
  };
  const u = new window.uPlot(opts, data, box);
  u._shape = shape;
  ctx.charts.set(key, u);
  return u;
}

/** An x/y chart with a numeric (not time) x axis, e.g. quality per policy version. */
function xyChart(ctx, box, key, xs, series, { height = 220, xLabel = "", xFmt = String } = {}) {
  const old = ctx.charts.get(key);
  if (old) old.destroy();
  ctx.charts.delete(key);
  box.replaceChildren();
  if (xs.length === 0) {
    box.append(el("div", { class: "empty", text: "no data yet" }));
    return null;
  }
  const u = new window.uPlot(
    {
      width: Math.max(320, box.clientWidth || 560),
      height,
      scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] } },
      series: [
        { label: xLabel },
        ...series.map((s, i) => ({ label: s.label, scale: s.scale || "y", stroke: s.color || PALETTE[i], width: 2, spanGaps: true, points: { show: true, size: 7 } })),
      ],
      axes: [{ label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? xFmt(v) : "")) }, { scale: "y", size: 55 }, ...(series.some((s) => s.scale === "n") ? [{ scale: "n", side: 1, grid: { show: false }, size: 55 }] : [])],
    },
    [xs, ...series.map((s) => s.values)],
    box,
  );
  ctx.charts.set(key, u);
  return u;
}

const SVG = "http" + "://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * A forest plot: per row a mean with its 95% interval (thick) inside its
 * always-valid interval (wide, pale). rows: [{label, mean, ci:[lo,hi], av:[lo,hi]}].
 */
function forest(rows, { fmt = (v) => v.toPrecision(3), zero = false } = {}) {
  const W = 820, rowH = 30, left = 190, right = 90, top = 8, bottom = 26;
  const H = top + bottom + rowH * rows.length;
  const vals = rows.flatMap((r) => [r.mean, ...(r.ci || []), ...(r.av || [])]).filter((v) => Number.isFinite(v));
  if (zero) vals.push(0);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (v) => left + ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (W - left - right);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, class: "forest", role: "img" });
  s.append(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    s.append(svg("text", { x: x(v), y: H - 8, "text-anchor": "middle", class: "tick" }, fmt(v)));
  }
  if (zero && lo < 0 && hi > 0) s.append(svg("line", { x1: x(0), x2: x(0), y1: top, y2: H - bottom, class: "zero" }));
  rows.forEach((r, i) => {
    const y = top + rowH * i + rowH / 2;
    s.append(svg("text", { x: 4, y: y + 4 }, r.label));
    if (!Number.isFinite(r.mean)) {
      s.append(svg("text", { x: left, y: y + 4, class: "tick" }, "no outcomes yet"));
      return;
    }
    if (r.av && r.av.every(Number.isFinite)) s.append(svg("line", { x1: x(r.av[0]), x2: x(r.av[1]), y1: y, y2: y, class: "av" }));
    if (r.ci && r.ci.every(Number.isFinite)) s.append(svg("line", { x1: x(r.ci[0]), x2: x(r.ci[1]), y1: y, y2: y, class: "ci" }));
    s.append(svg("circle", { cx: x(r.mean), cy: y, r: 4.5, class: "mean" }));
    s.append(svg("text", { x: W - right + 8, y: y + 4 }, fmt(r.mean)));
  });
  return el("div", {}, s, el("div", { class: "legend-row" }, el("span", {}, el("span", { class: "swatch ci" }), "95% confidence interval"), el("span", {}, el("span", { class: "swatch av" }), "always-valid interval (safe to look at any time)"), el("span", {}, "● mean")));
}

// --------------------------------------------------------------- widgets

function card(label, value, sub, attrs = {}) {
  return el("div", { class: "card", ...attrs }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }), sub ? el("div", { class: "sub", text: sub }) : null);
}

function table(head, rows, attrs = {}) {
  return el(
    "div",
    { class: "tablewrap" },
    el(
      "table",
      attrs,
      el("thead", {}, el("tr", {}, head.map((h) => (typeof h === "string" ? el("th", { text: h }) : el("th", { class: h.cls, text: h.text }))))),
      el("tbody", {}, rows),
    ),
  );
}
const td = (v, cls) => el("td", { class: cls }, v);
const tn = (v) => td(v, "num");
const badge = (s) => el("span", { class: "badge " + s, text: s.replace("_", " ") });
function meter(fraction) {
  const m = el("div", { class: "meter" + (fraction > 1 ? " over" : "") }, el("span"));
  m.firstChild.style.width = Math.min(100, Math.max(0, 100 * (fraction || 0))) + "%";
  return m;
}

// --------------------------------------------------------------- overview

const WINDOWS = [
  { label: "15 minutes", window_s: 900, bucket_s: 15 },
  { label: "1 hour", window_s: 3600, bucket_s: 60 },
  { label: "6 hours", window_s: 21600, bucket_s: 300 },
  { label: "24 hours", window_s: 86400, bucket_s: 1200 },
  { label: "7 days", window_s: 604800, bucket_s: 7200 },
];
let windowIndex = 1;

function windowPicker(onChange) {
  const sel = el("select", { id: "window", "aria-label": "window", onchange: () => { windowIndex = Number(sel.value); onChange(); } }, WINDOWS.map((w, i) => el("option", { value: i, text: "last " + w.label })));
  sel.value = String(windowIndex);
  return sel;
}

async function stats() {
  const w = WINDOWS[windowIndex];
  return api(`/v1/stats?window_s=${w.window_s}&bucket_s=${w.bucket_s}`);
}

function overview(root, ctx) {
  const admin = session.me.admin;
  const cards = el("div", { class: "cards", id: "overview-cards" });
  const health = el("div", { class: "cards", id: "health-cards" });
  const boxes = {
    traffic: el("div", { class: "chart", id: "chart-traffic" }),
    quality: el("div", { class: "chart", id: "chart-quality" }),
    latency: el("div", { class: "chart", id: "chart-latency" }),
    share: el("div", { class: "chart", id: "chart-share" }),
  };
  const savings = el("div", { class: "panel", id: "savings" });
  const limited = el("p", { class: "note", hidden: true });
  const update = () => ctx.alive && tick();
  root.append(
    el("div", { class: "toolbar" }, el("h1", { text: "Overview" }), el("span", { class: "spacer" }), admin ? windowPicker(() => { for (const c of ctx.charts.values()) c.destroy(); ctx.charts.clear(); update(); }) : null),
    health,
  );
  if (admin) {
    root.append(
      el("h2", { text: "Traffic" }),
      cards,
      limited,
      el(
        "div",
        { class: "grid2" },
        el("div", { class: "panel" }, el("h3", { text: "Requests and spend" }), boxes.traffic),
        el("div", { class: "panel" }, el("h3", { text: "Quality (judged and from feedback)" }), boxes.quality),
        el("div", { class: "panel" }, el("h3", { text: "Latency and time to first token" }), boxes.latency),
        el("div", { class: "panel" }, el("h3", { text: "Each model's share of requests" }), boxes.share),
      ),
      el("h2", { text: "Estimated savings" }),
      savings,
    );
  } else {
    root.append(el("p", { class: "note", text: "Traffic, spend, quality and policy statistics need an admin key; this key sees the gateway's health and its models." }));
  }

  async function tick() {
    const [h, s] = await Promise.all([api("/v1/health"), admin ? stats() : null]);
    health.replaceChildren(
      card("Status", h.status, h.breakers_open.length ? "open breakers: " + h.breakers_open.join(", ") : "no breaker open", { "data-stat": "status" }),
      card("Serving policy", "v" + h.policy_version, "trainer steps: " + num(h.trainer_steps)),
      card("Models available", num(h.models_available)),
      card("Decisions stored", num(h.store_records)),
      card("Up for", h.uptime_s < 90 ? Math.round(h.uptime_s) + " s" : h.uptime_s < 5400 ? Math.round(h.uptime_s / 60) + " min" : (h.uptime_s / 3600).toFixed(1) + " h"),
    );
    if (!s || !ctx.alive) return;
    const t = s.totals;
    cards.replaceChildren(
      card("Requests", num(t.requests), `${num(t.errors)} errors`, { "data-stat": "requests", "data-value": t.requests }),
      card("Spend", usd(t.spend_usd), t.requests ? usd(t.spend_usd / t.requests) + " per request" : "", { "data-stat": "spend" }),
      card("Quality, judged", q(t.quality_judged), "mean of judged outcomes", { "data-stat": "quality-judged" }),
      card("Quality, feedback", q(t.quality_feedback), `${num(t.feedback_count)} feedback`, { "data-stat": "quality-feedback" }),
      card("Latency p50", t.latency_ms ? ms(t.latency_ms.p50) : "–", t.latency_ms ? `p95 ${ms(t.latency_ms.p95)} · p99 ${ms(t.latency_ms.p99)}` : "", { "data-stat": "latency" }),
      card("Time to first token p50", t.ttft_ms ? ms(t.ttft_ms.p50) : "–", t.ttft_ms ? `p95 ${ms(t.ttft_ms.p95)} (streamed requests)` : "no streamed requests", { "data-stat": "ttft" }),
      card("Saved", s.savings.saved_usd === null ? "–" : usd(s.savings.saved_usd), s.savings.saved_fraction === null ? "" : pct(s.savings.saved_fraction) + " of the baseline", { "data-stat": "saved" }),
    );
    limited.hidden = !s.limited;
    limited.textContent = s.limited ? `Only the newest ${num(s.experiences)} decisions of this window are counted.` : "";
    const xs = s.series.map((b) => b.t_ms);
    const col = (k) => s.series.map((b) => b[k]);
    timeChart(ctx, boxes.traffic, "traffic", xs, [
      { label: "requests", values: col("requests"), fmt: (v) => num(v) },
      { label: "spend (USD)", values: col("spend_usd"), scale: "usd", fmt: usd, axisFmt: (v) => "$" + v.toPrecision(2) },
    ]);
    timeChart(ctx, boxes.quality, "quality", xs, [
      { label: "judged", values: col("quality_judged"), fmt: q },
      { label: "feedback", values: col("quality_feedback"), fmt: q },
    ]);
    timeChart(ctx, boxes.latency, "latency", xs, [
      { label: "latency p50", values: col("latency_p50_ms"), fmt: ms },
      { label: "latency p95", values: col("latency_p95_ms"), fmt: ms },
      { label: "TTFT p50", values: col("ttft_p50_ms"), fmt: ms },
    ]);
    const models = s.models.map((m) => m.model);
    timeChart(
      ctx,
      boxes.share,
      "share",
      xs,
      models.map((m) => ({
        label: m,
        values: s.series.map((b) => (b.requests ? ((b.models && b.models[m]) || 0) / b.requests : null)),
        fmt: (v) => pct(v),
        axisFmt: (v) => Math.round(100 * v) + "%",
      })),
      { scales: { y: { range: [0, 1] } } },
    );
    const sv = s.savings;
    savings.replaceChildren(
      el(
        "div",
        { class: "cards" },
        card("Actual spend", usd(sv.actual_usd)),
        card("Always " + (sv.baseline_model || "the strongest model"), usd(sv.baseline_usd), "estimated"),
        card("Estimated saving", sv.saved_usd === null ? "–" : usd(sv.saved_usd), sv.saved_fraction === null ? "" : pct(sv.saved_fraction)),
      ),
      el("p", { class: "note", id: "savings-method" }, el("strong", { text: "How this is estimated: " }), sv.method),
    );
  }
  return tick;
}

// ------------------------------------------------------------------ policy

function policyPage(root, ctx) {
  const head = el("div", { class: "cards" });
  const curve = el("div", { class: "chart", id: "chart-learning" });
  const timeline = el("div", { class: "chart", id: "chart-versions" });
  const versions = el("div", { id: "policy-versions" });
  const msg = el("p", { class: "note", hidden: true });
  root.append(
    el("div", { class: "toolbar" }, el("h1", { text: "Policy" })),
    head,
    el(
      "div",
      { class: "grid2" },
      el("div", { class: "panel" }, el("h3", { text: "Online learning curve: mean quality and requests per policy version" }), curve),
      el("div", { class: "panel" }, el("h3", { text: "Versions over time (which version routed the decisions)" }), timeline),
    ),
    el("h2", { text: "Versions in the registry" }),
    msg,
    versions,
  );
  let lastVersions = "";

  async function rollback(v) {
    if (!confirm(`Serve policy version ${v} again? Every replica switches to it.`)) return;
    try {
      await api(`/v1/admin/policies/${encodeURIComponent(v)}/rollback`, { method: "POST" });
      msg.className = "note ok";
      msg.textContent = `Rolled back: version ${v} is being served.`;
      lastVersions = "";
      await tick();
    } catch (e) {
      msg.className = "error";
      msg.textContent = "Rollback failed: " + e.message;
    }
    msg.hidden = false;
  }

  async function tick() {
    const w = WINDOWS[windowIndex];
    const [h, s, reg, shadow] = await Promise.all([
      api("/v1/health"),
      stats(),
      api("/v1/admin/policies").catch((e) => ({ error: e.message })),
      api("/v1/shadow").catch((e) => (e.status === 404 ? null : { error: e.message })),
    ]);
    if (!ctx.alive) return;
    const p = s.policy;
    head.replaceChildren(
      card("Serving version", "v" + (reg.serving ?? p.serving_version), reg.versions ? `${reg.versions.length} versions in the registry` : ""),
      card("Trainer steps", num(h.trainer_steps), "online updates so far"),
      card("Exploration rate", p.exploration_rate === null ? "–" : pct(p.exploration_rate), "share of requests not routed to the greedy choice", { "data-stat": "exploration" }),
      shadow === null
        ? card("Shadow agreement", "–", "no shadow policy configured")
        : shadow.error
          ? card("Shadow agreement", "–", shadow.error)
          : card("Shadow agreement", shadow.agreement_rate === null ? "–" : pct(shadow.agreement_rate), `${shadow.name} v${shadow.version}: ${num(shadow.agreements)} of ${num(shadow.decisions)} decisions`),
    );
    const pv = [...p.versions].sort((a, b) => a.version - b.version);
    xyChart(
      ctx,
      curve,
      "curve",
      pv.map((v) => v.version),
      [
        { label: "mean quality", values: pv.map((v) => v.mean_quality) },
        { label: "requests", values: pv.map((v) => v.requests), scale: "n", color: "#98a2b3" },
      ],
      { xLabel: `policy version (decisions of the last ${w.label})`, xFmt: (v) => "v" + v },
    );
    // When each version served: from the decisions (first and last seen).
    const seen = pv.flatMap((v) => [[v.first_ms, v.version], [v.last_ms, v.version]]).sort((a, b) => a[0] - b[0]);
    timeChart(ctx, timeline, "timeline", seen.map((p) => p[0]), [{ label: "version serving", values: seen.map((p) => p[1]), fmt: (x) => "v" + x }]);
    if (reg.error) {
      versions.replaceChildren(el("p", { class: "error", text: reg.error }));
      return;
    }
    const sig = JSON.stringify([reg.serving, reg.versions.map((v) => v.version)]);
    if (sig === lastVersions) return;
    lastVersions = sig;
    const rows = [...reg.versions]
      .sort((a, b) => b.version - a.version)
      .map((v) => {
        const l = v.lineage || {};
        const serving = v.version === reg.serving;
        return el(
          "tr",
          { "data-version": v.version },
          td(el("span", {}, "v" + v.version, " ", serving ? badge("serving") : "")),
          td(l.source ?? "–"),
          td(l.parent === null || l.parent === undefined ? "–" : "v" + l.parent),
          td(l.base ?? "–"),
          tn(num(l.steps)),
          tn(num(l.experiences)),
          td(l.writer ?? "–"),
          td(el("span", { title: when(l.created_ms) }, ago(l.created_ms))),
          td(serving ? "" : el("button", { class: "small quiet", "data-action": "rollback", onclick: () => rollback(v.version), text: "Roll back to this" })),
        );
      });
    versions.replaceChildren(
      rows.length
        ? table(["version", "source", "parent", "base", { text: "steps", cls: "num" }, { text: "experiences", cls: "num" }, "writer", "created", ""], rows)
        : el("p", { class: "note", text: "The registry has no version yet: the shipped policy is served until the trainer publishes one." }),
    );
  }
  return tick;
}

// ------------------------------------------------------------- experiments

const STRATEGY_KINDS = ["learned", "balanced", "quality_first", "cost_optimized", "speed_priority", "round_robin", "fixed"];

function strategyText(s) {
  if (!s) return "";
  if (s.kind === "fixed") return "fixed: " + s.model;
  if (s.kind === "weighted") return "weighted: " + Object.entries(s.weights || {}).map(([m, w]) => `${m}×${w}`).join(", ");
  return s.kind;
}

function experimentsPage(root, ctx, [id]) {
  return id ? experimentDetail(root, ctx, id) : experimentList(root, ctx);
}

function experimentList(root, ctx) {
  const list = el("div", { id: "experiment-list" });
  const formBox = el("div", { class: "panel" });
  root.append(el("div", { class: "toolbar" }, el("h1", { text: "Experiments" })), list, el("h2", { text: "New experiment" }), formBox);
  const models = [];
  formBox.append(createForm(models));
  let first = true;

  async function tick() {
    const [l, caps] = await Promise.all([api("/v1/experiments"), first ? api("/v1/capabilities") : null]);
    if (!ctx.alive) return;
    if (caps) {
      models.push(...caps.models.map((m) => m.id));
      for (const s of formBox.querySelectorAll("select[data-models]")) fillModels(s, models);
      first = false;
    }
    const rows = [...l.experiments].reverse().map((x) => {
      const sp = x.experiment.spec;
      return el(
        "tr",
        { "data-experiment": sp.id },
        td(el("a", { href: "#/experiments/" + encodeURIComponent(sp.id), text: sp.id })),
        td(badge(x.status)),
        td(sp.arms.map((a) => `${a.name} (${strategyText(a.strategy)})`).join(" · ")),
        td(sp.unit),
        td(el("span", { title: when(x.experiment.created_ms) }, ago(x.experiment.created_ms))),
        td(sp.description || ""),
      );
    });
    list.replaceChildren(rows.length ? table(["id", "status", "arms", "unit", "created", "description"], rows) : el("p", { class: "note", text: "No experiment yet." }));
  }
  return tick;
}

function fillModels(select, models) {
  const keep = select.value;
  select.replaceChildren(...models.map((m) => el("option", { value: m, text: m })));
  if (keep) select.value = keep;
}

function createForm(models) {
  const arms = el("div", { id: "arms" });
  const err = el("p", { class: "error", id: "create-error", hidden: true });
  const headerName = el("input", { name: "header", placeholder: "x-tenant-id", size: 14, hidden: true });
  const unit = el("select", { name: "unit", onchange: () => (headerName.hidden = unit.value !== "header") }, el("option", { value: "user", text: "user (user_id / user)" }), el("option", { value: "api_key", text: "API key" }), el("option", { value: "header", text: "a header" }));

  function addArm(name, kind) {
    const model = el("select", { name: "model", "data-models": "" });
    fillModels(model, models);
    const kindSel = el("select", { name: "kind", onchange: () => (modelLabel.hidden = kindSel.value !== "fixed") }, STRATEGY_KINDS.map((k) => el("option", { value: k, text: k.replace("_", " ") })));
    kindSel.value = kind;
    const modelLabel = el("label", { hidden: kind !== "fixed" }, "model", model);
    const row = el(
      "div",
      { class: "arm" },
      el("label", {}, "arm name", el("input", { name: "name", value: name, size: 12, required: true })),
      el("label", {}, "strategy", kindSel),
      modelLabel,
      el("label", {}, "traffic weight", el("input", { name: "weight", type: "number", min: "0", step: "any", value: "1", size: 5 })),
      el("label", {}, "checkpoint (optional)", el("input", { name: "checkpoint", placeholder: "live policy", size: 12 })),
      el("button", { type: "button", class: "small quiet", text: "Remove", onclick: () => { if (arms.children.length > 2) row.remove(); } }),
    );
    arms.append(row);
  }
  addArm("control", "learned");
  addArm("cheap", "cost_optimized");

  const form = el(
    "form",
    { class: "create", id: "create-experiment", method: "post" },
    el(
      "div",
      { class: "row" },
      el("label", {}, "id", el("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}", size: 18, placeholder: "cheap-vs-learned" })),
      el("label", {}, "description", el("input", { name: "description", size: 36 })),
      el("label", {}, "unit (what makes assignment sticky)", el("span", {}, unit, " ", headerName)),
      el("label", {}, "holdout share", el("input", { name: "holdout", type: "number", min: "0", max: "0.99", step: "any", value: "0", size: 5 })),
      el("label", {}, "horizon (requests per arm)", el("input", { name: "horizon", type: "number", min: "1", step: "1", value: "1000", size: 7 })),
    ),
    el("fieldset", {}, el("legend", { text: "Arms (the first is the control)" }), arms),
    el("div", { class: "row" }, el("button", { type: "button", class: "quiet", text: "Add an arm", onclick: () => addArm("arm" + (arms.children.length + 1), "balanced") }), el("button", { type: "submit", id: "create-submit", text: "Create and start" })),
    err,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const f = new FormData(form);
    const spec = {
      id: String(f.get("id")).trim(),
      unit: unit.value === "header" ? "header:" + headerName.value.trim() : unit.value,
      holdout: Number(f.get("holdout") || 0),
      horizon: Math.round(Number(f.get("horizon") || 1000)),
      arms: [...arms.children].map((row) => {
        const v = (n) => row.querySelector(`[name=${n}]`).value.trim();
        const kind = v("kind");
        const arm = { name: v("name"), weight: Number(v("weight") || 1), strategy: kind === "fixed" ? { kind, model: v("model") } : { kind } };
        if (v("checkpoint")) arm.checkpoint = v("checkpoint");
        return arm;
      }),
    };
    const d = String(f.get("description") || "").trim();
    if (d) spec.description = d;
    try {
      await api("/v1/experiments", { method: "POST", body: spec });
      location.hash = "#/experiments/" + encodeURIComponent(spec.id);
    } catch (e) {
      err.textContent = "Not created: " + e.message;
      err.hidden = false;
    }
  });
  return form;
}

const METRICS = [
  { key: "reward", label: "reward", fmt: (v) => v.toFixed(3) },
  { key: "quality", label: "quality", fmt: (v) => v.toFixed(3) },
  { key: "cost_usd", label: "cost per request", fmt: (v) => usd(v) },
  { key: "latency_ms", label: "latency", fmt: (v) => ms(v) },
  { key: "error_rate", label: "error rate", fmt: (v) => pct(v) },
];

function experimentDetail(root, ctx, id) {
  ctx.refreshMs = 3000;
  const head = el("div", { class: "cards" });
  const arms = el("div", { id: "arm-results" });
  const chartBox = el("div", { class: "panel", id: "arm-chart" });
  const vs = el("div", { id: "vs-control" });
  const warnings = el("ul", { class: "note" });
  const msg = el("p", { class: "error", hidden: true });
  let metric = 0;
  const metricSel = el("select", { "aria-label": "metric", onchange: () => { metric = Number(metricSel.value); tick(); } }, METRICS.map((m, i) => el("option", { value: i, text: m.label })));
  const stop = el("button", { class: "danger", id: "stop-experiment", hidden: true, text: "Stop experiment", onclick: doStop });
  root.append(
    el("div", { class: "toolbar" }, el("a", { href: "#/experiments", text: "← Experiments" }), el("h1", { text: "Experiment " + id }), el("span", { class: "spacer" }), stop),
    msg,
    head,
    el("h2", { text: "Arms" }),
    arms,
    el("h2", {}, "Per-arm ", metricSel),
    chartBox,
    el("h2", { text: "Against the control" }),
    vs,
    warnings,
  );

  async function doStop() {
    if (!confirm(`Stop experiment ${id}? Enrolment ends; its records stay.`)) return;
    try {
      await api(`/v1/experiments/${encodeURIComponent(id)}/stop`, { method: "POST" });
      msg.hidden = true;
      await tick();
    } catch (e) {
      msg.textContent = "Stop failed: " + e.message;
      msg.hidden = false;
    }
  }

  async function tick() {
    const x = await api(`/v1/experiments/${encodeURIComponent(id)}`);
    if (!ctx.alive) return;
    const r = x.results;
    const sp = x.experiment.spec;
    stop.hidden = !(x.status === "running" || x.status === "scheduled");
    head.replaceChildren(
      card("Status", x.status, x.experiment.stopped_ms ? "stopped " + ago(x.experiment.stopped_ms) : "created " + ago(x.experiment.created_ms), { "data-stat": "experiment-status", "data-value": x.status }),
      card("Requests", num(r.requests), `unit: ${sp.unit}`, { "data-stat": "experiment-requests", "data-value": r.requests }),
      card("Control", r.control),
      card("Holdout", pct(sp.holdout || 0), `horizon ${num(sp.horizon)} per arm`),
    );
    const est = (e, f) => (e ? el("span", { title: `95%: ${f(e.ci[0])} … ${f(e.ci[1])}\nalways valid: ${f(e.always_valid_ci[0])} … ${f(e.always_valid_ci[1])}` }, f(e.mean)) : "–");
    arms.replaceChildren(
      table(
        ["arm", "strategy", { text: "expected share", cls: "num" }, { text: "requests", cls: "num" }, { text: "pending", cls: "num" }, { text: "units", cls: "num" }, { text: "errors", cls: "num" }, { text: "reward", cls: "num" }, { text: "quality", cls: "num" }, { text: "cost", cls: "num" }, { text: "latency", cls: "num" }],
        r.arms.map((a) =>
          el(
            "tr",
            { "data-arm": a.arm },
            td(el("span", {}, a.arm, " ", a.control ? el("span", { class: "muted", text: "(control)" }) : "")),
            td(strategyText((sp.arms.find((s) => s.name === a.arm) || {}).strategy) || a.strategy),
            tn(pct(a.expected_share)),
            el("td", { class: "num", "data-requests": a.requests, text: num(a.requests) }),
            tn(num(a.pending)),
            tn(num(a.units)),
            tn(num(a.errors)),
            tn(est(a.reward, (v) => v.toFixed(3))),
            tn(est(a.quality, (v) => v.toFixed(3))),
            tn(est(a.cost_usd, usd)),
            tn(est(a.latency_ms, ms)),
          ),
        ),
      ),
    );
    const m = METRICS[metric];
    chartBox.replaceChildren(
      forest(
        r.arms.map((a) => {
          const e = a[m.key];
          return { label: `${a.arm} (n=${a.requests})`, mean: e ? e.mean : NaN, ci: e ? e.ci : null, av: e ? e.always_valid_ci : null };
        }),
        { fmt: m.fmt },
      ),
    );
    const diffs = r.arms.filter((a) => a.vs_control && a.vs_control[m.key]);
    vs.replaceChildren(
      diffs.length
        ? el(
            "div",
            {},
            forest(diffs.map((a) => ({ label: `${a.arm} − ${r.control}`, mean: a.vs_control[m.key].difference, ci: a.vs_control[m.key].ci, av: a.vs_control[m.key].always_valid_ci })), { fmt: m.fmt, zero: true }),
            table(
              ["arm", { text: "difference", cls: "num" }, { text: "p (fixed n)", cls: "num" }, { text: "p (always valid)", cls: "num" }],
              diffs.map((a) => {
                const c = a.vs_control[m.key];
                return el("tr", {}, td(a.arm), tn(m.fmt(c.difference)), tn(c.p_value.toPrecision(2)), tn(c.always_valid_p_value.toPrecision(2)));
              }),
            ),
          )
        : el("p", { class: "note", text: "No comparison yet: each arm needs outcomes." }),
    );
    warnings.replaceChildren(...(r.warnings || []).map((w) => el("li", { text: w })));
  }
  return tick;
}

// ------------------------------------------------------------------ models

function modelsPage(root, ctx) {
  const admin = session.me.admin;
  const cache = el("div", { class: "cards", id: "cache-cards" });
  const list = el("div", { id: "model-table" });
  root.append(el("div", { class: "toolbar" }, el("h1", { text: "Models and providers" })), admin ? cache : null, list);
  if (admin) root.append(el("p", { class: "note", text: "Requests, error rates, latency percentiles (end to end, as the caller saw them) and quality are over the overview's window; breaker states are this replica's, now." }));

  async function tick() {
    const [caps, s] = await Promise.all([api("/v1/capabilities"), admin ? stats() : null]);
    if (!ctx.alive) return;
    const by = new Map(((s && s.models) || []).map((m) => [m.model, m]));
    if (s) {
      const c = s.cache;
      cache.replaceChildren(
        card("Cache hit rate", c.hit_rate === null ? "–" : pct(c.hit_rate), `${num(c.hits)} hits · ${num(c.misses)} misses`, { "data-stat": "cache" }),
        card("Requests in window", num(s.totals.requests), "last " + WINDOWS[windowIndex].label),
        card("Error rate", s.totals.requests ? pct(s.totals.errors / s.totals.requests) : "–", `${num(s.totals.errors)} errors`),
      );
    }
    const head = ["model", "provider", "breaker", { text: "$ in / out per Mtok", cls: "num" }, { text: "context", cls: "num" }];
    if (admin) head.push({ text: "requests", cls: "num" }, "share", { text: "error rate", cls: "num" }, { text: "p50", cls: "num" }, { text: "p95", cls: "num" }, { text: "p99", cls: "num" }, { text: "quality", cls: "num" }, { text: "spend", cls: "num" });
    const rows = caps.models.map((m) => {
      const st = by.get(m.id);
      const cells = [td(el("span", { class: "mono", text: m.id })), td(m.provider), td(badge(m.breaker)), tn(`${m.input_per_mtok} / ${m.output_per_mtok}`), tn(num(m.context_window))];
      if (admin) {
        cells.push(
          tn(num(st ? st.requests : 0)),
          td(el("div", {}, pct(st ? st.share : 0), meter(st ? st.share : 0))),
          tn(st ? pct(st.error_rate) : "–"),
          tn(st && st.latency_ms ? ms(st.latency_ms.p50) : "–"),
          tn(st && st.latency_ms ? ms(st.latency_ms.p95) : "–"),
          tn(st && st.latency_ms ? ms(st.latency_ms.p99) : "–"),
          tn(st ? q(st.mean_quality) : "–"),
          tn(st ? usd(st.spend_usd) : "–"),
        );
      }
      return el("tr", { "data-model": m.id, "data-breaker": m.breaker }, cells);
    });
    list.replaceChildren(table(head, rows));
  }
  return tick;
}

// -------------------------------------------------------------------- keys

function keysPage(root, ctx) {
  const list = el("div", { id: "key-table" });
  root.append(
    el("div", { class: "toolbar" }, el("h1", { text: "Keys" })),
    el("p", { class: "note", text: "Virtual keys: spend in the current budget period against each key's budget, and its limits. Secrets are never shown after creation (POST /v1/keys)." }),
    list,
  );
  async function tick() {
    const { keys } = await api("/v1/keys");
    if (!ctx.alive) return;
    const rows = keys.map((k) =>
      el(
        "tr",
        { "data-key": k.id },
        td(el("span", {}, el("span", { class: "mono", text: k.id }), " ", k.admin ? el("span", { class: "badge admin", text: "admin" }) : "", " ", k.revoked_ms ? el("span", { class: "badge stopped", text: "revoked" }) : "")),
        td(k.name || "–"),
        td(el("span", { class: "mono", text: k.preview })),
        td(k.models && k.models.length ? k.models.join(", ") : "all"),
        tn(k.rpm ?? "–"),
        tn(k.tpm ?? "–"),
        td(el("div", {}, usd(k.spend_usd), k.budget_usd ? ` of ${usd(k.budget_usd)} per ${k.budget_period || "total"}` : " (no budget)", k.budget_usd ? meter(k.spend_usd / k.budget_usd) : "")),
        td(k.expires_at ? when(k.expires_at) : "never"),
        td(el("span", { title: when(k.created_ms) }, ago(k.created_ms))),
      ),
    );
    list.replaceChildren(rows.length ? table(["id", "name", "preview", "models", { text: "rpm", cls: "num" }, { text: "tpm", cls: "num" }, "spend / budget", "expires", "created"], rows) : el("p", { class: "note", text: "No virtual key yet." }));
  }
  return tick;
}

// -------------------------------------------------------------------- start

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", () => signOut(null));
window.addEventListener("hashchange", route);
start();
