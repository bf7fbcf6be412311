// batchd console: a page per hash route (#/lanes, #/batch/<id>, ...), each polling its JSON API
// while visible and re-rendering its data in place. No framework, no build step; every value
// from the server goes into the page as text (never as HTML).
"use strict";

const S = {
  session: null, // what /api/session said
  route: null,
  page: null, // {url(), render(data)} of the page shown
  timer: null,
  seq: 0, // bumped on each navigation, so a late answer for a page left is dropped
  lastOk: 0,
  failing: null,
  paused: false,
};

const PAGES = [
  ["overview", "Overview", ""],
  ["lanes", "Lanes", "lanes"],
  ["batches", "Batches", "batches"],
  ["requests", "Requests", "requests"],
  ["dead", "Dead letters", "dead"],
  ["webhooks", "Webhooks", "webhooks"],
  ["paused", "Paused", "paused"],
  ["daemons", "Daemons", "daemons"],
];

// -- DOM ------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

function $(id) { return document.getElementById(id); }

function replace(el, ...children) { el.replaceChildren(); add(el, children); }

// -- formatting -------------------------------------------------------------------------------

const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  let v = Number(n);
  for (const unit of ["B", "kB", "MB"]) {
    if (v < 1000) return unit === "B" ? `${v} B` : `${v.toFixed(1)} ${unit}`;
    v /= 1000;
  }
  return `${v.toFixed(1)} GB`;
}

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hrs / 24)}d${hrs % 24}h`;
}

function fmtTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(ms, now) { return ms ? `${fmtAge(Math.max(0, (now - ms) / 1000))} ago` : "–"; }

function usd(x) {
  const v = Number(x || 0);
  const a = Math.abs(v);
  return `$${v.toFixed(a >= 100 ? 0 : a >= 1 || a === 0 ? 2 : a >= 0.01 ? 3 : 5)}`;
}

function chip(text, cls) { return h("span", { class: `chip ${cls || text}` }, text); }

function link(route, text, attrs) { return h("a", { href: `#/${route}`, ...(attrs || {}) }, text); }

function requestLink(id) { return link(`request/${encodeURIComponent(id)}`, id, { class: "mono" }); }

function batchLink(b) {
  const label = b.batch_id || `(${b.id})`;
  return link(`batch/${encodeURIComponent(b.id)}`, label, { class: "mono", "data-batch": b.id });
}

function table(headers, rows, attrs) {
  const head = h("tr", {}, headers.map((x) => {
    const [label, cls] = Array.isArray(x) ? x : [x, ""];
    return h("th", { class: cls, scope: "col" }, label);
  }));
  return h("div", { class: "table-wrap" }, h("table", attrs || {}, h("thead", {}, head), h("tbody", {}, rows)));
}

function td(content, cls) { return h("td", { class: cls || null }, content); }

function kv(pairs) {
  const dl = h("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    dl.append(h("dt", {}, k), h("dd", {}, v === null || v === "" ? "–" : v));
  }
  return dl;
}

function jsonBlock(value) { return h("pre", { class: "json" }, JSON.stringify(value, null, 2)); }

function progress(counts, total) {
  const bar = h("div", { class: "bar", role: "img" });
  const done = ["succeeded", "errored", "canceled", "expired"];
  let finished = 0;
  for (const k of done) {
    const n = counts[k] || 0;
    finished += n;
    if (n > 0 && total > 0) bar.append(h("span", { class: k, "data-w": n }));
  }
  for (const span of bar.children) span.style.width = `${(100 * Number(span.dataset.w)) / total}%`;
  const label = `${fmtNum(finished)}/${fmtNum(total)}`;
  bar.setAttribute("aria-label", `${label} done`);
  return h("div", { class: "progress", title: done.map((k) => `${k} ${counts[k] || 0}`).join(", ") }, bar, h("small", {}, label));
}

function pager(page, go) {
  const { offset, limit, total } = page;
  if (total <= limit && offset === 0) return null;
  const last = Math.min(total, offset + limit);
  return h("div", { class: "pager" },
    h("button", { class: "btn", disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit)) }, "‹ Previous"),
    h("span", { class: "muted" }, `${fmtNum(total ? offset + 1 : 0)}–${fmtNum(last)} of ${fmtNum(total)}`),
    h("button", { class: "btn", disabled: last >= total, onclick: () => go(offset + limit) }, "Next ›"));
}

// -- talking to the server ----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    if (S.session && S.session.csrf) opts.headers["X-Batchd-CSRF"] = S.session.csrf;
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401 && S.session && S.session.signed_in && path !== "/api/login") {
    await start(); // the session ended (the daemon restarted, or it expired): sign in again
  }
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

function flash(message, bad) {
  const el = h("div", { class: bad ? "bad" : "" }, message);
  $("flash").append(el);
  setTimeout(() => el.remove(), 6000);
}

function confirmDialog(text) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

async function act(question, path, body, done) {
  if (question && !(await confirmDialog(question))) return;
  try {
    const out = await api(path, body);
    flash(done(out));
  } catch (e) {
    flash(`Not done: ${e.message}`, true);
  }
  refresh();
}

const canAct = () => Boolean(S.session && S.session.can_act);

// -- routing and the refresh loop -----------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/");
  return { name: parts[0] || "overview", arg: parts.slice(1).map(decodeURIComponent).join("/"), params: new URLSearchParams(query || "") };
}

function go(name, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  location.hash = `#/${name}${s ? `?${s}` : ""}`;
}

function renderNav(counts) {
  const current = S.route ? S.route.name : "";
  const on = { batch: "batches", request: "requests" }[current] || current;
  replace($("nav"), PAGES.map(([name, label, path]) => {
    const n = counts ? counts[name] : 0;
    return h("a", { href: `#/${path}`, class: name === on ? "on" : null, "data-page": name }, label,
      n ? h("span", { class: "count", title: `${n}` }, n > 999 ? "999+" : n) : null);
  }));
}

function show() {
  S.route = parseHash();
  S.seq += 1;
  clearTimeout(S.timer);
  const view = $("view");
  view.removeAttribute("data-loaded");
  view.replaceChildren();
  const make = ROUTES[S.route.name] || notFound;
  if (!S.session || !S.session.signed_in) {
    S.page = loginPage(view);
  } else {
    S.page = make(view, S.route);
  }
  renderNav(S.counts);
  document.title = `${(PAGES.find(([n]) => n === S.route.name) || [0, S.route.name])[1]} · batchd console`;
  refresh();
}

async function refresh() {
  clearTimeout(S.timer);
  const seq = S.seq;
  const page = S.page;
  if (!page || !page.url) return;
  try {
    const data = await api(page.url());
    if (seq !== S.seq) return;
    page.render(data);
    S.lastOk = Date.now();
    S.failing = null;
    $("view").dataset.loaded = S.route.name;
  } catch (e) {
    if (seq !== S.seq) return;
    S.failing = e.message;
    if (page.failed) page.failed(e);
  }
  liveLine();
  schedule();
}

function schedule() {
  clearTimeout(S.timer);
  if (S.paused || document.hidden || !S.session) return;
  S.timer = setTimeout(refresh, S.session.refresh_ms || 2000);
}

function liveLine() {
  const el = $("live");
  const stale = S.failing !== null;
  el.className = `live${stale ? " stale" : ""}${S.paused ? " paused" : ""}`;
  replace(el,
    S.paused ? "paused" : stale ? `not updating: ${S.failing}` : `live · updated ${new Date(S.lastOk).toISOString().slice(11, 19)}Z`,
    " ",
    h("button", { class: "btn", id: "live-toggle", onclick: () => { S.paused = !S.paused; if (!S.paused) refresh(); liveLine(); } },
      S.paused ? "Resume updates" : "Pause updates"));
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
window.addEventListener("hashchange", show);

// -- the session --------------------------------------------------------------------------------

async function start() {
  try {
    S.session = await api("/api/session");
  } catch (e) {
    S.session = null;
    replace($("banner"), h("div", { class: "banner-error" }, `The console cannot be reached: ${e.message}`));
    return;
  }
  renderWho();
  renderBanner();
  show();
}

function renderWho() {
  const s = S.session;
  if (!s || !s.signed_in) { replace($("who")); return; }
  replace($("who"),
    h("span", { id: "who-name" }, `${s.who} · ${s.role}`),
    s.open ? null : h("button", { class: "btn", id: "logout", onclick: async () => {
      await api("/api/logout", {}).catch(() => null);
      await start();
    } }, "Sign out"));
  replace($("foot-info"), `batchd ${s.version} · ${s.listen || ""}`);
}

function renderBanner() {
  const s = S.session;
  const items = [];
  if (s && s.open) {
    items.push(h("div", { class: "banner-open", id: "open-notice" },
      h("b", {}, "Open console. "),
      "No console tokens are configured, so this console listens on loopback only and anyone who can reach it there may look and act. Add [[console.tokens]] to the configuration to require sign-in."));
  }
  if (s && s.signed_in && !s.can_act) {
    items.push(h("div", { class: "banner-viewer", id: "viewer-notice" },
      h("b", {}, "Read-only. "), `You are signed in as ${s.who}, a viewer: requeue, purge, retry and resume need an operator token.`));
  }
  replace($("banner"), items);
}

function loginPage(view) {
  const input = h("input", { type: "password", id: "token", placeholder: "bct_…", autocomplete: "current-password", "aria-label": "Console token" });
  const msg = h("p", { class: "muted", id: "login-msg" });
  const form = h("form", { class: "panel login", id: "login" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This console needs a token. An administrator makes one with `python -m batchd.console token --name NAME`."),
    input, h("button", { class: "btn primary", type: "submit" }, "Sign in"), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("/api/login", { token: input.value });
      input.value = "";
      await start();
    } catch (e) {
      msg.textContent = e.message;
    }
  });
  view.append(form);
  view.dataset.loaded = "login";
  input.focus();
  return { url: null };
}

$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (q) await findAndGo(q, null, null);
});

async function findAndGo(q, account, msgEl) {
  try {
    const found = await api(`/api/find?${new URLSearchParams({ q, ...(account ? { account } : {}) })}`);
    if (found.kind === "request") location.hash = `#/request/${encodeURIComponent(found.id)}`;
    else if (found.kind === "batch") location.hash = `#/batch/${encodeURIComponent(found.id)}`;
    else {
      const text = `Nothing found for “${q}”: not a request id, an idempotency key${account ? ` in ${account}` : ""}, or a batch batchd knows.`;
      if (msgEl) msgEl.textContent = text; else flash(text, true);
    }
  } catch (e) {
    flash(e.message, true);
  }
}

// -- charts -------------------------------------------------------------------------------------

const COLORS = ["--c0", "--c1", "--c2", "--c3", "--c4", "--c5", "--c6", "--c7", "--c8"];
const color = (i) => getComputedStyle(document.documentElement).getPropertyValue(COLORS[i % COLORS.length]).trim();

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function clock(ms, span) { return new Date(ms).toISOString().slice(11, span < 600000 ? 19 : 16); }

function lineChart(title, t, series, opts) {
  const o = { format: fmtNum, empty: "Not enough samples yet.", ...(opts || {}) };
  const box = h("div", { class: "panel chart", "data-chart": o.id || title }, h("h3", {}, title));
  const values = series.flatMap((s) => s.values);
  if (t.length < 2 || series.length === 0) {
    box.append(h("div", { class: "empty" }, o.empty));
    return box;
  }
  const W = 600, H = 200, L = 48, R = 8, T = 8, B = 22;
  const t0 = t[0], t1 = t[t.length - 1] === t0 ? t0 + 1 : t[t.length - 1];
  const ymax = niceMax(Math.max(...values, 0));
  const x = (ms) => L + ((ms - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    g.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg("text", { class: "axis", x: L - 6, y: y(v) + 3, "text-anchor": "end", text: o.format(v) }));
  }
  for (let i = 0; i <= 3; i++) {
    const ms = t0 + ((t1 - t0) * i) / 3;
    g.append(svg("text", { class: "axis", x: x(ms), y: H - 6, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle", text: clock(ms, t1 - t0) }));
  }
  series.forEach((s, i) => {
    const pts = s.values.map((v, j) => `${x(t[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = svg("polyline", { points: pts, fill: "none", stroke: color(i), "stroke-width": 2, "stroke-linejoin": "round" });
    line.append(svg("title", { text: `${s.name}: now ${o.format(s.values[s.values.length - 1])}` }));
    g.append(line);
  });
  add(box, [g, h("div", { class: "legend" }, series.map((s, i) => {
    const sw = h("i", {});
    sw.style.background = color(i);
    return h("span", {}, sw, `${s.name} `, h("b", {}, o.format(s.values[s.values.length - 1])));
  })), o.note ? h("div", { class: "muted" }, o.note) : null]);
  return box;
}

// -- pages --------------------------------------------------------------------------------------

function notFound(view) {
  view.append(h("h1", {}, "No such page"), link("", "Back to the overview"));
  view.dataset.loaded = "none";
  return { url: null };
}

function simplePage(view, title, url, render) {
  const head = h("h1", {}, title);
  const body = h("div", {});
  view.append(head, body);
  return {
    url,
    render: (data) => replace(body, render(data)),
    failed: (e) => { if (!body.firstChild) replace(body, h("p", { class: "muted" }, e.message)); },
  };
}

function overviewPage(view) {
  return simplePage(view, "Overview", () => "/api/overview", (d) => {
    const tt = d.totals;
    S.counts = { dead: tt.dead, webhooks: tt.webhooks_dead, paused: tt.paused };
    renderNav(S.counts);
    const alerts = d.alerts.length
      ? h("div", { class: "alerts", id: "alerts" }, d.alerts.map((a) =>
        h("div", { class: `alert ${a.level}`, "data-kind": a.kind }, h("b", {}, a.title), h("span", { class: "d" }, a.detail),
          a.page ? link(a.page, "Open ›") : null)))
      : h("div", { class: "allgood", id: "alerts" }, "✓ Nothing needs attention now.");
    const tile = (label, n, route, cls, id) => h("a", { class: `tile ${cls || ""}`, href: `#/${route}`, "data-tile": id },
      h("div", { class: "n" }, fmtNum(n)), h("div", { class: "l" }, label));
    const tiles = h("div", { class: "tiles" },
      tile("daemons alive", tt.daemons, "daemons", tt.daemons ? "" : "bad", "daemons"),
      tile("stage workers", tt.stage_workers, "daemons", tt.stage_workers ? "" : "warn", "workers"),
      tile(`pending in ${fmtNum(tt.lanes)} lanes`, tt.pending, "lanes", "", "pending"),
      tile(`batches in flight (${fmtNum(tt.requests_in_flight)} requests)`, tt.batches_in_flight, "batches", "", "in_flight"),
      tile("batches in the making", tt.batches_in_making, "batches", "", "making"),
      tile("dead letters", tt.dead, "dead", tt.dead ? "warn" : "", "dead"),
      tile("webhooks given up", tt.webhooks_dead, "webhooks", tt.webhooks_dead ? "warn" : "", "webhooks_dead"),
      tile("paused accounts", tt.paused, "paused", tt.paused ? "bad" : "", "paused"));
    const tp = d.throughput;
    const charts = h("div", { class: "charts" },
      lineChart("Requests per minute (UTC)", tp.map((m) => m.minute_ms), [
        { name: "submitted", values: tp.map((m) => m.submitted) },
        { name: "ended", values: tp.map((m) => m.ended) },
      ], { id: "throughput", empty: "No minutes counted yet: a running daemon takes a snapshot each minute." }),
      lineChart("Backlog per lane (pending requests)", d.charts.backlog.t, d.charts.backlog.series, { id: "backlog" }),
      lineChart("Batches", d.charts.batches.t, d.charts.batches.series, { id: "batches" }),
      costChart(d.cost));
    const busiest = d.busiest_lanes.filter((ln) => ln.pending > 0);
    return [alerts, tiles, charts,
      h("h2", {}, "Busiest lanes"),
      busiest.length ? lanesTable(busiest, d.now_ms) : h("p", { class: "muted" }, "No request is waiting in a lane.")];
  });
}

function costChart(cost) {
  if (!cost || !cost.available) {
    return h("div", { class: "panel chart", "data-chart": "cost" }, h("h3", {}, "Cost and savings"),
      h("div", { class: "empty" }, (cost && cost.why) || "The cost ledger is not available."));
  }
  const hours = cost.hours;
  const total = cost.total;
  return lineChart("Cost and savings per hour (USD, UTC)", hours.map((x) => x.hour_ms), [
    { name: "spent", values: hours.map((x) => x.cost_usd) },
    { name: "saved by batching", values: hours.map((x) => x.saved_usd) },
  ], {
    id: "cost", format: usd,
    note: `Last 24 h: spent ${usd(total.cost_usd)}, saved ${usd(total.saved_usd)} against ${usd(total.realtime_cost_usd)} at real-time prices` +
      (total.unpriced_models.length ? ` (no price for ${total.unpriced_models.join(", ")})` : ""),
  });
}

function lanesTable(lanes, now) {
  return table(["account", "lane", ["priority", "num"], "kind", ["pending", "num"], ["bytes", "num"], ["oldest", "num"], ["window", "num"], "state"],
    lanes.map((ln) => h("tr", { class: ln.overdue && !ln.paused ? "late" : null, "data-lane": `${ln.account}/${ln.lane}` },
      td(ln.account), td(ln.lane, "mono"), td(fmtNum(ln.priority), "num"),
      td(ln.interactive ? "drop-in" : "batch" + (ln.betas && ln.betas.length ? ` · ${ln.betas.join(", ")}` : ln.beta_id ? " · betas" : "")),
      td(fmtNum(ln.pending), "num"), td(fmtBytes(ln.bytes), "num"), td(fmtAge(ln.oldest_age_s), "num"), td(`${ln.window_s}s`, "num"),
      td(ln.paused ? chip("paused", "bad") : ln.overdue ? chip("older than its window", "warn") : ln.pending ? chip("waiting", "pending") : chip("empty", "")))));
}

function lanesPage(view) {
  return simplePage(view, "Lanes", () => "/api/lanes", (d) => {
    const busy = d.lanes.filter((ln) => ln.pending > 0).length;
    return [h("p", { class: "muted" }, `${fmtNum(d.lanes.length)} lanes, ${fmtNum(busy)} with requests waiting. A lane is cut into a batch when full, or when its oldest request has waited its window.`),
      d.lanes.length ? lanesTable(d.lanes, d.now_ms) : h("p", { class: "muted" }, "No lane has had a request yet.")];
  });
}

function accountSelect(value, onchange, id) {
  const accounts = (S.session && S.session.accounts) || [];
  const sel = h("select", { id, "aria-label": "Account", onchange: (e) => onchange(e.target.value) },
    h("option", { value: "" }, "all accounts"), accounts.map((a) => h("option", { value: a, selected: a === value }, a)));
  return sel;
}

function batchesPage(view, route) {
  const p = route.params;
  const state = p.get("state") || "live";
  const account = p.get("account") || "";
  const offset = Number(p.get("offset") || 0);
  const params = (extra) => ({ state, account, offset, ...extra });
  const stateSel = h("select", { id: "batch-state", "aria-label": "Which batches", onchange: (e) => go("batches", params({ state: e.target.value, offset: 0 })) },
    [["live", "in the making or in flight"], ["in_flight", "in flight"], ["all", "recent, closed ones too"]].map(([v, l]) => h("option", { value: v, selected: v === state }, l)));
  const controls = h("div", { class: "row panel" }, h("label", {}, "Show ", stateSel), accountSelect(account, (a) => go("batches", params({ account: a, offset: 0 })), "batch-account"));
  const summary = h("p", { class: "muted" });
  const body = h("div", {});
  view.append(h("h1", {}, "Batches"), controls, summary, body);
  return {
    url: () => `/api/batches?${new URLSearchParams({ state, offset, limit: 100, ...(account ? { account } : {}) })}`,
    render: (d) => {
      const s = d.summary;
      summary.textContent = `${fmtNum(s.live)} live (${Object.entries(s.states).map(([k, v]) => `${k} ${v}`).join(", ") || "none"}); ` +
        `${fmtNum(s.in_flight)} in flight with ${fmtNum(s.requests_in_flight)} requests, ${fmtNum(s.finished_in_flight)} of them done.`;
      replace(body, d.batches.length
        ? table(["batch", "account", "lane", "state", ["requests", "num"], "progress (API's counts)", ["age", "num"], ["polls", "num"]],
          d.batches.map((b) => h("tr", { "data-id": b.id },
            td(batchLink(b), "id"), td(b.account), td(b.lane, "mono"), td(chip(b.state)), td(fmtNum(b.requests), "num"),
            td(b.polled ? progress(b.counts, b.requests) : h("span", { class: "muted" }, b.in_flight ? "not polled yet" : "–")),
            td(fmtAge(b.age_s), "num"), td(fmtNum(b.polls), "num"))))
        : h("p", { class: "muted" }, state === "all" ? "batchd has made no batch lately." : "No batch is in the making or in flight."),
      pager(d.page, (o) => go("batches", params({ offset: o }))));
    },
  };
}

function batchPage(view, route) {
  const ref = route.arg;
  const offset = Number(route.params.get("offset") || 0);
  const head = h("h1", {}, "Batch ", h("span", { class: "mono" }, ref));
  const body = h("div", {});
  view.append(head, body);
  return {
    url: () => `/api/batches/${encodeURIComponent(ref)}?offset=${offset}&limit=100`,
    render: (d) => {
      const b = d.batch;
      replace(head, "Batch ", h("span", { class: "mono" }, b.batch_id || b.id), " ", chip(b.state));
      const counts = Object.entries(b.counts).map(([k, v]) => `${k} ${fmtNum(v)}`).join(" · ");
      replace(body,
        h("div", { class: "panel" }, kv([
          ["batchd id", h("span", { class: "mono", id: "batch-id" }, b.id)],
          ["API batch id", b.batch_id ? h("span", { class: "mono" }, b.batch_id) : "not created yet"],
          ["account", b.account], ["lane", b.lane], ["state", b.state],
          ["requests", fmtNum(b.requests)], ["body", fmtBytes(b.bytes)], ["age", fmtAge(b.age_s)], ["polls", fmtNum(b.polls)],
          ["progress", b.polled ? h("div", {}, progress(b.counts, b.requests), h("small", { class: "muted", id: "batch-counts" }, counts)) : "not polled yet"],
          ["canceled by an operator", b.operator_canceled ? "yes" : undefined],
        ])),
        h("h2", {}, "Timeline (UTC)"),
        h("div", { class: "panel" }, h("ol", { class: "timeline", id: "timeline" }, b.timeline.map((s) =>
          h("li", {}, h("span", { class: "when" }, fmtTime(s.at_ms)), h("b", {}, s.step), h("span", { class: "muted" }, s.meaning))))),
        h("h2", {}, `Requests (${fmtNum(d.page.total)})`),
        d.requests.length
          ? table(["request", "status", ["attempts", "num"]], d.requests.map((r) => h("tr", { "data-id": r.id },
            td(requestLink(r.id), "id"), td(chip(r.status)), td(fmtNum(r.attempts), "num"))))
          : h("p", { class: "muted" }, d.note || "No requests listed."),
        pager(d.page, (o) => { location.hash = `#/batch/${encodeURIComponent(ref)}?offset=${o}`; }));
    },
    failed: (e) => { if (!body.firstChild) replace(body, h("p", { class: "muted" }, e.message)); },
  };
}

function requestsPage(view) {
  const q = h("input", { type: "text", id: "find-q", placeholder: "default.01J… · an idempotency key · msgbatch_…", "aria-label": "Request id, idempotency key or batch id" });
  const account = accountSelect("", () => null, "find-account");
  const msg = h("p", { class: "muted", id: "find-msg" });
  const form = h("form", { class: "panel", id: "find" },
    h("p", {}, "Find a request by its id or its idempotency key, or a batch by the API's id (msgbatch_…) or batchd's (account.assembly)."),
    h("div", { class: "row" }, q, account, h("button", { class: "btn primary", type: "submit" }, "Find")), msg);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); if (q.value.trim()) findAndGo(q.value.trim(), account.value, msg); });
  view.append(h("h1", {}, "Requests"), form);
  view.dataset.loaded = "requests";
  q.focus();
  return { url: null };
}

function requestPage(view, route) {
  const id = route.arg;
  const head = h("h1", {}, "Request ", h("span", { class: "mono" }, id));
  const body = h("div", {});
  view.append(head, body);
  return {
    url: () => `/api/requests/${encodeURIComponent(id)}`,
    render: (d) => {
      const r = d.request;
      replace(head, "Request ", h("span", { class: "mono" }, r.id), " ", chip(r.status));
      const parts = [h("div", { class: "panel" }, kv([
        ["status", h("span", { id: "req-status" }, r.status)], ["account", r.account], ["attempts", fmtNum(r.attempts)],
        ["lane", r.lane ? h("span", { class: "mono" }, r.lane) : undefined],
        ["idempotency key", r.key ? h("span", { class: "mono" }, r.key) : null], ["tag", r.tag || undefined],
        ["reply queue", r.reply_to || undefined], ["callback URL", r.callback_url ? h("span", { class: "mono" }, r.callback_url) : undefined],
        ["batch", r.batch ? h("span", {}, batchLink(r.batch), r.batch.state ? ` (${r.batch.state})` : "") : r.batch_id ? h("span", { class: "mono" }, r.batch_id) : "none yet"],
        ["submitted", r.submitted_ms ? `${fmtTime(r.submitted_ms)} (${ago(r.submitted_ms, d.now_ms)})` : r.submitted_at || undefined],
        ["ended", r.ended_at || undefined],
        ["queued in its lane", r.enqueued_ms ? fmtTime(r.enqueued_ms) : undefined],
        ["deadline", r.deadline_ms ? fmtTime(r.deadline_ms) : undefined],
        ["metadata", r.metadata !== null && r.metadata !== undefined ? h("span", { class: "mono" }, JSON.stringify(r.metadata)) : undefined],
      ]))];
      if (r.dead_letter) {
        const x = r.dead_letter;
        parts.push(h("h2", {}, "Dead letter"), h("div", { class: "panel", id: "dead-box" },
          h("p", {}, `It failed ${x.attempts} times and gave up. `, x.requeueable ? "It can be sent round again from its first attempt." : "Its params are gone (past retention): it cannot be requeued."),
          canAct() ? h("div", { class: "row" },
            h("button", { class: "btn primary", id: "req-requeue", disabled: !x.requeueable, onclick: () => act(null, "/api/dead/requeue", { ids: [r.id] }, (o) => `${r.id}: ${o.outcomes[r.id]}`) }, "Requeue"),
            h("button", { class: "btn danger", id: "req-purge", onclick: () => act(`Purge dead letter ${r.id}? Its result stays readable until retention ends.`, "/api/dead/purge", { ids: [r.id] }, (o) => `Purged ${o.purged}`) }, "Purge")) : null));
      }
      if (r.last_error) parts.push(h("h2", {}, "Last failed attempt"), jsonBlock(r.last_error));
      if (r.webhook) {
        const w = r.webhook;
        parts.push(h("h2", {}, "Webhook delivery"), h("div", { class: "panel", id: "webhook-box" }, kv([
          ["state", chip(w.state)], ["URL", h("span", { class: "mono" }, w.url)], ["webhook id", h("span", { class: "mono" }, w.webhook_id)],
          ["attempts", fmtNum(w.attempts)], ["last status", w.last_status], ["last error", w.last_error],
          ["last attempt", w.last_attempt_ms ? fmtTime(w.last_attempt_ms) : null], ["next attempt", w.state === "pending" && w.next_ms ? fmtTime(w.next_ms) : undefined],
        ]), canAct() && w.state !== "pending" ? h("div", { class: "row" }, h("button", { class: "btn", id: "req-retry-webhook", onclick: () => act(null, "/api/webhooks/retry", { ids: [r.id] }, (o) => `Delivery of ${r.id}: ${Object.values(o.outcomes)[0]} → pending`) }, "Deliver again")) : null));
      }
      parts.push(h("h2", {}, "Result envelope"), r.envelope ? jsonBlock(r.envelope) : h("p", { class: "muted" }, "Not ended yet: the envelope comes with its result."));
      parts.push(h("details", {}, h("summary", {}, "Request params (what was sent to the API)"),
        r.params !== null ? jsonBlock(r.params) : h("p", { class: "muted" }, "No longer kept (a request's params go when it ends well).")));
      replace(body, parts);
    },
    failed: (e) => { if (!body.firstChild) replace(body, h("p", { class: "muted" }, e.message)); },
  };
}

function deadPage(view, route) {
  const p = route.params;
  const account = p.get("account") || "";
  const errorType = p.get("error_type") || "";
  const offset = Number(p.get("offset") || 0);
  const params = (extra) => ({ account, error_type: errorType, offset, ...extra });
  const selected = new Set();
  const filter = {};
  if (account) filter.account = account;
  if (errorType) filter.error_type = errorType;
  const filtered = Boolean(account || errorType);
  const what = filtered ? `the dead letters ${[account && `of ${account}`, errorType && `whose last error is ${errorType}`].filter(Boolean).join(" ")}` : "every dead letter";
  const controls = h("div", { class: "row panel" },
    accountSelect(account, (a) => go("dead", params({ account: a, offset: 0 })), "dead-account"),
    errorType ? h("span", {}, "error ", chip(errorType, "bad"), " ", h("a", { href: "#", id: "dead-clear-type", onclick: (e) => { e.preventDefault(); go("dead", params({ error_type: "", offset: 0 })); } }, "× clear")) : null,
    h("span", { class: "spacer" }),
    canAct() ? [
      h("button", { class: "btn", id: "dead-requeue-selected", onclick: () => selected.size && act(`Requeue ${selected.size} selected dead letters?`, "/api/dead/requeue", { ids: [...selected] }, (o) => `Requeued ${o.requeued} of ${selected.size}`) }, "Requeue selected"),
      h("button", { class: "btn danger", id: "dead-purge-selected", onclick: () => selected.size && act(`Purge ${selected.size} selected dead letters?`, "/api/dead/purge", { ids: [...selected] }, (o) => `Purged ${o.purged}`) }, "Purge selected"),
      h("button", { class: "btn", id: "dead-requeue-all", onclick: () => act(`Requeue ${what}?`, "/api/dead/requeue", filtered ? filter : { all: true }, (o) => `Requeued ${o.requeued}`) }, filtered ? "Requeue all matching" : "Requeue all"),
      h("button", { class: "btn danger", id: "dead-purge-all", onclick: () => act(`Purge ${what}? Their results stay readable until retention ends.`, "/api/dead/purge", filtered ? filter : { all: true }, (o) => `Purged ${o.purged}`) }, filtered ? "Purge all matching" : "Purge all"),
    ] : null);
  const summary = h("div", {});
  const body = h("div", {});
  view.append(h("h1", {}, "Dead letters"), controls, summary, body);
  return {
    url: () => `/api/dead?${new URLSearchParams({ offset, limit: 100, ...filter })}`,
    render: (d) => {
      const types = Object.entries(d.error_types);
      replace(summary, h("p", { class: "muted" }, `${fmtNum(d.page.total)} dead letters${account ? ` in ${account}` : ""}. Requests that failed every attempt they were allowed wait here to be requeued or purged.`),
        types.length ? h("div", { class: "row", id: "dead-types" }, "By last error: ", types.map(([t, n]) =>
          h("a", { class: `chip${t === errorType ? " on" : ""}`, href: "#", "data-type": t, onclick: (e) => { e.preventDefault(); go("dead", params({ error_type: t === errorType ? "" : t, offset: 0 })); } }, `${t} ${n}`))) : null);
      const ids = new Set(d.letters.map((x) => x.id));
      for (const id of [...selected]) if (!ids.has(id)) selected.delete(id);
      replace(body, d.letters.length
        ? table([canAct() ? "" : null, "request", "account", "died", ["attempts", "num"], "last error", "message", canAct() ? "" : null].filter((x) => x !== null),
          d.letters.map((x) => h("tr", { "data-id": x.id },
            canAct() ? td(h("input", { type: "checkbox", "aria-label": `select ${x.id}`, checked: selected.has(x.id), onchange: (e) => { if (e.target.checked) selected.add(x.id); else selected.delete(x.id); } })) : null,
            td(requestLink(x.id), "id"), td(x.account), td(ago(x.died_ms, d.now_ms)), td(fmtNum(x.attempts), "num"), td(chip(x.error.type, "bad")), td(x.error.message, "msg"),
            canAct() ? td(h("div", { class: "row" },
              h("button", { class: "btn", "data-action": "requeue", disabled: !x.requeueable, title: x.requeueable ? null : "its params are gone", onclick: () => act(null, "/api/dead/requeue", { ids: [x.id] }, (o) => `${x.id}: ${o.outcomes[x.id]}`) }, "Requeue"),
              h("button", { class: "btn danger", "data-action": "purge", onclick: () => act(`Purge dead letter ${x.id}?`, "/api/dead/purge", { ids: [x.id] }, (o) => `Purged ${o.purged}`) }, "Purge"))) : null)))
        : h("p", { class: "muted", id: "dead-empty" }, filtered ? "No dead letter matches." : "No dead letters."),
      pager(d.page, (o) => go("dead", params({ offset: o }))));
    },
  };
}

function webhooksPage(view) {
  const body = h("div", {});
  const retryAll = canAct() ? h("button", { class: "btn", id: "webhooks-retry-all", onclick: () => act("Send every delivery that gave up again, from its first attempt?", "/api/webhooks/retry", { all: true }, (o) => `Retrying ${o.retried} deliveries`) }, "Retry all") : null;
  view.append(h("div", { class: "row" }, h("h1", {}, "Webhooks"), h("span", { class: "spacer" }), retryAll), body);
  return {
    url: () => "/api/webhooks",
    render: (d) => {
      const queued = Object.values(d.queued).reduce((a, b) => a + b, 0);
      replace(body,
        h("p", { class: "muted" }, `${fmtNum(queued)} deliveries queued; ${fmtNum(d.deliveries.length)} gave up (dead after their last attempt, or gone: the endpoint answered 410).`),
        d.deliveries.length
          ? table(["request", "URL", "state", ["attempts", "num"], "last answer", "ended", canAct() ? "" : null].filter((x) => x !== null),
            d.deliveries.map((w) => h("tr", { "data-id": w.request_id },
              td(requestLink(w.request_id), "id"), td(w.url, "mono msg"), td(chip(w.state)), td(fmtNum(w.attempts), "num"),
              td([w.last_status ? `HTTP ${w.last_status}` : "", w.last_error ? ` ${w.last_error}` : ""].join("") || "–", "msg"),
              td(ago(w.ended_ms, d.now_ms)),
              canAct() ? td(h("button", { class: "btn", "data-action": "retry", onclick: () => act(null, "/api/webhooks/retry", { ids: [w.request_id] }, (o) => `${w.request_id}: was ${o.outcomes[w.request_id]}, now pending`) }, "Retry")) : null)))
          : h("p", { class: "muted", id: "webhooks-empty" }, "No delivery has given up."),
        d.gone.length ? [h("h2", {}, "Endpoints that answered 410 Gone"), table(["account", "URL", "since"], d.gone.map((g) => h("tr", {}, td(g.account), td(g.url, "mono"), td(fmtTime(g.at_ms)))))] : null);
    },
  };
}

function pausedPage(view) {
  return simplePage(view, "Paused accounts", () => "/api/paused", (d) => [
    h("p", { class: "muted" }, "An account is paused when the API refuses its key: its lanes keep their requests and nothing is sent until it resumes (by itself after a while, when batchd restarts, or here)."),
    d.paused.length
      ? table(["account", "why", ["resumes by itself in", "num"], canAct() ? "" : null].filter((x) => x !== null), d.paused.map((x) => h("tr", { "data-account": x.account },
        td(x.account), td(x.reason, "msg"), td(fmtAge(x.resumes_in_s), "num"),
        canAct() ? td(h("button", { class: "btn primary", "data-action": "resume", onclick: () => act(`Resume account ${x.account} now? Its requests go out again at once.`, "/api/paused/resume", { account: x.account }, (o) => `${o.account}: ${o.resumed ? "resumed" : "was not paused"}`) }, "Resume")) : null)))
      : h("p", { id: "paused-none" }, `✓ No account is paused (${d.accounts.join(", ")}).`),
  ]);
}

function daemonsPage(view) {
  return simplePage(view, "Daemons and workers", () => "/api/daemons", (d) => [
    h("h2", {}, `batchd run processes alive (${d.daemons.length})`),
    d.daemons.length ? table(["identity", ["last heartbeat", "num"]], d.daemons.map((x) => h("tr", { "data-identity": x.identity },
      td(x.identity, "mono"), td(`${fmtAge(x.last_seen_s)} ago`, "num"))))
      : h("p", {}, chip("none alive", "bad")),
    h("h2", {}, `Stage workers (${d.workers.length})`),
    d.workers.length ? table(["worker", "host", ["pid", "num"], "state", "current job", ["jobs ok", "num"], ["failed", "num"], "last heartbeat"], d.workers.map((w) =>
      h("tr", { "data-worker": w.name }, td(w.name, "mono"), td(w.hostname), td(w.pid, "num"), td(chip(w.state, w.state === "busy" ? "pending" : "ok")),
        td(w.current_job || "–", "mono msg"), td(fmtNum(w.successful_jobs), "num"), td(fmtNum(w.failed_jobs), "num"), td(ago(w.last_heartbeat_ms, d.now_ms)))))
      : h("p", {}, chip("no stage worker", "bad")),
    h("h2", {}, "Stage jobs waiting"),
    h("div", { class: "panel" }, kv(Object.entries(d.stage_jobs_queued).map(([k, v]) => [k, fmtNum(v)]))),
    h("h2", {}, "This console's daemon"),
    h("div", { class: "panel" }, kv([["identity", d.this_process.identity ? h("span", { class: "mono" }, d.this_process.identity) : null],
      ["health", d.this_process.problems.length ? d.this_process.problems.join("; ") : chip("every loop and worker alive", "ok")]])),
  ]);
}

const ROUTES = {
  overview: overviewPage,
  lanes: lanesPage,
  batches: batchesPage,
  batch: batchPage,
  requests: requestsPage,
  request: requestPage,
  dead: deadPage,
  webhooks: webhooksPage,
  paused: pausedPage,
  daemons: daemonsPage,
};

start();
