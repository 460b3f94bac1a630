// Vandamme dashboard. Polls state.json, ../metrics/running-totals and ../metrics/recent every
// POLL_MS and redraws. Every value from the server goes into the page as text (textContent,
// setAttribute), never as HTML. No build step: plain ES2020, uPlot from uPlot.iife.min.js.
(() => {
  "use strict";

  const POLL_MS = 2000;
  const MAX_POINTS = 180; // 6 minutes of history at 2 s
  const KEY_STORE = "vandamme-gateway-key";
  const URLS = { state: "state.json", totals: "../metrics/running-totals", recent: "../metrics/recent" };
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
                   "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#9333ea"];
  const FIELDS = ["requests", "errors", "input_tokens", "output_tokens", "active_streams"];

  // ---- small DOM helpers (text only)
  const $ = (sel) => document.querySelector(sel);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "title") node.title = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function setText(sel, value) {
    const node = $(sel);
    if (node) node.textContent = value === null || value === undefined ? "–" : String(value);
  }
  function fillBody(table, rows, empty) {
    const body = document.querySelector(`[data-testid="${table}"] tbody`);
    const cols = document.querySelectorAll(`[data-testid="${table}"] thead th`).length;
    body.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: cols }, empty))]));
  }

  // ---- formatting
  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtMs = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
  const fmtRate = (v) => (v === null || v === undefined ? "–" : v.toFixed(2));
  function fmtTime(iso, withMs) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withMs ? `${t}.${pad(d.getMilliseconds(), 3)}` : t;
  }
  function fmtDateTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.toISOString().slice(0, 10)} ${fmtTime(iso)}`;
  }

  // ---- fetching (the gateway key, when one was given, goes in x-vandamme-key)
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function getJSON(url) {
    const headers = { accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers["x-vandamme-key"] = key;
    const resp = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
    if (!resp.ok) {
      let message = `HTTP ${resp.status}`;
      try {
        const body = await resp.json();
        if (body && body.error && body.error.message) message = `${message}: ${body.error.message}`;
      } catch (_) { /* not JSON */ }
      throw new HttpError(resp.status, message);
    }
    return resp.json();
  }

  // ---- state (providers, aliases, routes, graph, generation)
  let stateSig = null;
  function renderState(s) {
    const sig = JSON.stringify({ ...s, now: null });
    if (sig === stateSig) return;
    stateSig = sig;
    setText('[data-testid="version"]', `v${s.version}`);
    setText('[data-testid="generation"]', s.generation);
    setText('[data-testid="loaded-at"]', fmtDateTime(s.loaded_at));
    setText('[data-testid="default-provider"]', s.default_provider || "(none)");
    setText('[data-testid="auth"]', s.auth ? "on" : "off");

    fillBody("providers", s.providers.map((p) => el("tr", {
      "data-testid": "provider-row", "data-name": p.name, class: p.active ? "" : "inactive",
    },
      el("td", { "data-field": "name" }, p.name, p.name === s.default_provider ? el("span", { class: "tag" }, "default") : null),
      el("td", { "data-field": "state" }, p.active ? el("span", { class: "ok" }, "active")
        : el("span", { class: "bad" }, `inactive: ${p.inactive_reason || "?"}`)),
      el("td", { "data-field": "format" }, p.format),
      el("td", { "data-field": "base_url", class: "mono" }, p.base_url),
      el("td", { "data-field": "keys", class: "num" }, p.keys),
      el("td", { "data-field": "keys_cooling", class: "num" + (p.keys_cooling ? " bad" : "") }, p.keys_cooling),
      el("td", { "data-field": "middleware" }, (p.middleware || []).join(", ") || "–"),
    )), "no providers");

    fillBody("aliases", s.aliases.map((a) => el("tr", {
      "data-testid": "alias-row", "data-name": a.name, class: a.active ? "" : "inactive",
      title: a.active ? null : "its provider is inactive",
    },
      el("td", {}, a.name), el("td", {}, a.scope), el("td", { class: "mono" }, a.target),
      el("td", { class: "muted wrap" }, a.source),
    )), "no aliases");

    fillBody("routes", s.routes.map((r) => el("tr", { "data-testid": "route-row", "data-name": r.name },
      el("td", {}, r.index), el("td", {}, r.name),
      el("td", { class: "mono wrap" }, r.match && Object.keys(r.match).length ? JSON.stringify(r.match) : "(any)"),
      el("td", { class: "mono" }, r.to), el("td", { class: "mono" }, (r.fallbacks || []).join(", ") || "–"),
      el("td", { class: "muted wrap" }, r.source),
    )), "no routes");

    renderGraph(s.graph);
  }

  function chain(pipe) {
    const row = el("div", { class: "chain" });
    pipe.stages.forEach((st, i) => {
      if (i) row.append(el("span", { class: "arrow" }, "→"));
      const where = st.source === "built in" ? "built in" : `declared at ${st.source}`;
      const title = `${st.name}: ${st.kind}, ${st.side === "response" ? "on the way out" : "on the way in"}, ${where}`
        + (st.defined_by && st.defined_by !== "built in" ? `, code: ${st.defined_by}` : "")
        + (st.detail ? ` — ${st.detail}` : "");
      row.append(el("span", {
        class: `stage${st.source !== "built in" ? " declared" : ""}${st.side === "response" ? " out" : ""}`,
        title, "data-stage": st.name,
      }, st.name, st.detail ? el("small", {}, ` ${st.detail}`) : null));
    });
    return row;
  }
  function renderGraph(g) {
    const box = $('[data-testid="graph"]');
    const parts = [el("div", { class: "pipe", "data-pipeline": "front" }, el("h3", {}, "front (every request)"), chain(g.front))];
    for (const [name, p] of Object.entries(g.providers)) {
      const block = el("div", { class: `pipe${p.active ? "" : " inactive"}`, "data-pipeline": name },
        el("h3", {}, `${name} `, el("span", { class: "muted" },
          `(${p.format}, ${p.base_url}${p.active ? "" : `, inactive: ${p.inactive_reason}`})`)));
      for (const [label, pipe] of Object.entries(p.pipelines)) {
        block.append(el("div", { class: "pipe-label" }, label), chain(pipe));
      }
      parts.push(block);
    }
    box.replaceChildren(...parts);
  }

  // ---- metrics: totals tables, rates from deltas, history for the charts
  let prev = null; // {t (ms, performance.now), since, totals}
  const hist = { t: [], providers: new Map(), models: new Map() };
  let rates = { providers: {}, models: {}, overall: null };

  function delta(cur, old, field, dt) {
    // a name that appeared since the last sample counted from zero: everything it has is new
    const d = (cur[field] || 0) - ((old && old[field]) || 0);
    return d < 0 ? null : d / dt;
  }
  function ingest(totals) {
    const now = performance.now();
    const fresh = !prev || prev.since !== totals.since;
    const dt = fresh ? 0 : (now - prev.t) / 1000;
    const groupRates = {};
    for (const kind of ["providers", "models"]) {
      groupRates[kind] = {};
      const curGroup = totals[kind] || {};
      for (const [name, cur] of Object.entries(curGroup)) {
        const old = fresh ? undefined : (prev.totals[kind] || {})[name];
        const ok = !fresh && dt > 0;
        const req = ok ? delta(cur, old, "requests", dt) : null;
        const inTok = ok ? delta(cur, old, "input_tokens", dt) : null;
        const outTok = ok ? delta(cur, old, "output_tokens", dt) : null;
        groupRates[kind][name] = {
          rate: req,
          tokens: inTok === null || outTok === null ? null : inTok + outTok,
          errors: ok ? delta(cur, old, "errors", dt) : null,
          p50: cur.latency_ms ? cur.latency_ms.p50 : null,
          p95: cur.latency_ms ? cur.latency_ms.p95 : null,
          p99: cur.latency_ms ? cur.latency_ms.p99 : null,
        };
      }
    }
    const overall = !fresh && dt > 0 ? delta(totals.overall || {}, prev.totals.overall || {}, "requests", dt) : null;
    rates = { ...groupRates, overall };
    prev = { t: now, since: totals.since, totals };
    if (fresh) { hist.t.length = 0; hist.providers.clear(); hist.models.clear(); }
    if (fresh) return; // the first sample has no rate: the charts start at the next
    hist.t.push(Date.now() / 1000);
    for (const kind of ["providers", "models"]) {
      const series = hist[kind];
      for (const name of Object.keys(groupRates[kind])) {
        if (!series.has(name)) {
          const filler = () => new Array(hist.t.length - 1).fill(null);
          series.set(name, { rate: filler(), tokens: filler(), errors: filler(), p50: filler(), p95: filler(), p99: filler() });
        }
      }
      for (const [name, s] of series) {
        const r = groupRates[kind][name] || {};
        for (const metric of Object.keys(s)) s[metric].push(r[metric] === undefined ? null : r[metric]);
      }
    }
    if (hist.t.length > MAX_POINTS) {
      const cut = hist.t.length - MAX_POINTS;
      hist.t.splice(0, cut);
      for (const kind of ["providers", "models"]) {
        for (const s of hist[kind].values()) for (const metric of Object.keys(s)) s[metric].splice(0, cut);
      }
    }
  }

  function totalsRow(name, t, rate) {
    const lat = t.latency_ms || {};
    return el("tr", { "data-testid": "totals-row", "data-name": name },
      el("td", { "data-field": "name", class: "mono" }, name),
      el("td", { "data-field": "requests", class: "num" }, fmtInt(t.requests)),
      el("td", { "data-field": "rate", class: "num" }, fmtRate(rate)),
      el("td", { "data-field": "errors", class: "num" + (t.errors ? " bad" : "") }, fmtInt(t.errors)),
      el("td", { "data-field": "input_tokens", class: "num" }, fmtInt(t.input_tokens)),
      el("td", { "data-field": "output_tokens", class: "num" }, fmtInt(t.output_tokens)),
      el("td", { "data-field": "active_streams", class: "num" }, fmtInt(t.active_streams)),
      el("td", { "data-field": "p50", class: "num" }, fmtMs(lat.p50)),
      el("td", { "data-field": "p95", class: "num" }, fmtMs(lat.p95)),
      el("td", { "data-field": "p99", class: "num" }, fmtMs(lat.p99)));
  }
  function renderTotals(totals) {
    const o = totals.overall || {};
    for (const f of FIELDS) setText(`[data-testid="overall-${f}"]`, fmtInt(o[f]));
    setText('[data-testid="overall-rate"]', fmtRate(rates.overall));
    const lat = o.latency_ms || {};
    setText('[data-testid="overall-latency"]', `${fmtMs(lat.p50)} / ${fmtMs(lat.p95)} / ${fmtMs(lat.p99)} ms`);
    setText('[data-testid="workers"]', totals.workers);
    setText('[data-testid="since"]', fmtDateTime(totals.since));
    for (const kind of ["providers", "models"]) {
      const group = totals[kind] || {};
      const names = Object.keys(group).sort();
      fillBody(`totals-${kind}`, names.map((n) => totalsRow(n, group[n], (rates[kind][n] || {}).rate)),
        "no requests yet");
    }
  }

  function renderRecent(recent) {
    const rows = (recent.data || []).map((r) => {
      const failed = r.status >= 400 || r.error_type;
      const target = r.provider ? `${r.provider}:${r.model || "?"}` : "–";
      return el("tr", { "data-testid": "recent-row", "data-request-id": r.request_id, class: failed ? "failed" : "" },
        el("td", { "data-field": "time", class: "mono", title: r.time }, fmtTime(r.time, true)),
        el("td", { "data-field": "request_id", class: "mono muted" }, r.request_id),
        el("td", { "data-field": "model_asked", class: "mono wrap" }, r.model_asked || "–"),
        el("td", { "data-field": "target", class: "mono" }, target),
        el("td", { "data-field": "status", class: failed ? "bad" : "ok" },
          r.status, r.error_type ? ` ${r.error_type}` : ""),
        el("td", { "data-field": "latency_ms", class: "num" }, fmtMs(r.latency_ms)),
        el("td", { "data-field": "input_tokens", class: "num" }, fmtInt(r.input_tokens)),
        el("td", { "data-field": "output_tokens", class: "num" }, fmtInt(r.output_tokens)),
        el("td", { "data-field": "stream" }, r.stream ? "stream" : "–"));
    });
    fillBody("recent", rows, "no requests yet");
  }

  // ---- charts (uPlot); a chart is rebuilt when its set of series changes
  const CHARTS = [
    { id: "chart-rate", metric: () => "rate", digits: 2 },
    { id: "chart-tokens", metric: () => "tokens", digits: 1 },
    { id: "chart-errors", metric: () => "errors", digits: 2 },
    { id: "chart-latency", metric: () => $("#percentile").value, digits: 1 },
  ];
  const plots = {};
  function chartSize(box) {
    return { width: Math.max(240, box.clientWidth), height: 180 };
  }
  function renderCharts() {
    const kind = $("#group-by").value;
    setText("#latency-caption", `latency ${$("#percentile").value} (ms)`);
    const names = [...hist[kind].keys()].sort();
    for (const c of CHARTS) {
      const box = document.getElementById(c.id);
      const metric = c.metric();
      const sig = `${kind}|${metric}|${names.join("\u0000")}`;
      if (!names.length || hist.t.length < 1) {
        if (plots[c.id]) { plots[c.id].plot.destroy(); delete plots[c.id]; }
        box.replaceChildren(el("div", { class: "placeholder" }, hist.t.length ? "no traffic yet" : "collecting…"));
        continue;
      }
      const data = [hist.t.slice(), ...names.map((n) => hist[kind].get(n)[metric].slice())];
      if (!plots[c.id] || plots[c.id].sig !== sig) {
        if (plots[c.id]) plots[c.id].plot.destroy();
        box.replaceChildren();
        const opts = {
          ...chartSize(box),
          series: [{}, ...names.map((n, i) => ({
            label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5,
            // under the cursor: that point; otherwise the latest value
            value: (u, v, si, idx) => {
              if (idx === null || idx === undefined) {
                const d = u.data[si] || [];
                v = d.length ? d[d.length - 1] : null;
              }
              return v === null || v === undefined ? "–" : v.toFixed(c.digits);
            },
          }))],
          scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
          axes: [{}, { size: 56 }],
          legend: { live: true },
        };
        plots[c.id] = { sig, plot: new uPlot(opts, data, box) };
      } else {
        plots[c.id].plot.setData(data);
      }
    }
  }
  window.addEventListener("resize", () => {
    for (const [id, p] of Object.entries(plots)) p.plot.setSize(chartSize(document.getElementById(id)));
  });
  $("#group-by").addEventListener("change", renderCharts);
  $("#percentile").addEventListener("change", renderCharts);

  // ---- the poll loop
  const statusBox = $('[data-testid="status"]');
  let ticks = 0;
  let timer = null;
  let inFlight = false;
  function showStatus(state, text) {
    statusBox.dataset.state = state;
    statusBox.textContent = text;
  }
  async function poll() {
    if (inFlight) return; // the running poll reschedules itself
    inFlight = true;
    clearTimeout(timer);
    try {
      await refresh();
    } finally {
      inFlight = false;
      timer = setTimeout(poll, POLL_MS);
    }
  }
  async function refresh() {
    const [st, totals, recent] = await Promise.allSettled([getJSON(URLS.state), getJSON(URLS.totals), getJSON(URLS.recent)]);
    const problems = [];
    let needKey = false;
    for (const [what, res] of [["state", st], ["metrics", totals], ["recent requests", recent]]) {
      if (res.status === "rejected") {
        if (res.reason && res.reason.status === 401) needKey = true;
        problems.push(`${what}: ${res.reason && res.reason.message ? res.reason.message : res.reason}`);
      }
    }
    try {
      if (st.status === "fulfilled") renderState(st.value);
      if (totals.status === "fulfilled") { ingest(totals.value); renderTotals(totals.value); renderCharts(); }
      if (recent.status === "fulfilled") renderRecent(recent.value);
    } catch (err) {
      problems.push(`page: ${err && err.message ? err.message : err}`);
    }
    $("#key-form").hidden = !needKey;
    ticks += 1;
    statusBox.dataset.tick = String(ticks);
    if (needKey) showStatus("auth", "gateway key needed");
    else if (problems.length) showStatus("error", `${problems.join("; ")} (retrying)`);
    else showStatus("ok", `updated ${fmtTime(new Date().toISOString())}`);
  }
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("#key-input");
    if (input.value) sessionStorage.setItem(KEY_STORE, input.value.trim());
    input.value = "";
    stateSig = null;
    poll();
  });
  poll();
})();
