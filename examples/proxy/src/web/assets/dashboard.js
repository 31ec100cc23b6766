// Dashboard: totals per window, calls and tokens per minute / per hour as hand-drawn SVG
// charts, per-model and per-key tables, the keys with the most 429s.
"use strict";
(function () {
  const { api, el, clear, toast, num, compact, pct, root } = GB;
  const SVG = "http://www.w3.org/2000/svg";
  const state = { granularity: "minute", window: "24h" };

  const tiles = el("div", { class: "tiles", id: "summary" });
  const granularity = el("div", { class: "segmented", role: "group", "aria-label": "Chart granularity" });
  const callsChart = el("div", { id: "calls-chart" });
  const tokensChart = el("div", { id: "tokens-chart" });
  const windowSel = el("select", { id: "table-window", "aria-label": "Window of the tables" },
    [["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]].map(([v, l]) => el("option", { value: v, selected: v === state.window }, l)));
  const modelsTable = el("div", { class: "table-wrap", id: "models-table" });
  const keysTable = el("div", { class: "table-wrap", id: "keys-table" });
  const clientsTable = el("div", { class: "table-wrap", id: "clients-table" });
  const attention = el("div", { class: "table-wrap", id: "attention-table" });

  clear(root, tiles,
    el("div", { class: "toolbar" }, el("h2", {}, "Traffic"), el("span", { class: "spacer" }), granularity,
      el("button", { type: "button", class: "small", onclick: () => loadAll() }, "Refresh")),
    el("div", { class: "grid2" },
      el("div", { class: "panel" }, el("h3", { id: "calls-title" }, "Calls"), el("div", { class: "legend" }, el("span", {}, el("i", { class: "ok" }), "success"), el("span", {}, el("i", { class: "bad" }), "failure")), callsChart),
      el("div", { class: "panel" }, el("h3", { id: "tokens-title" }, "Tokens"), el("div", { class: "legend" }, el("span", {}, el("i", { class: "tok" }), "tokens")), tokensChart)),
    el("div", { class: "toolbar" }, el("h2", {}, "Breakdown"), el("span", { class: "spacer" }), windowSel),
    el("div", { class: "grid2" },
      el("div", {}, el("h3", {}, "Per model"), modelsTable),
      el("div", {}, el("h3", {}, "Per key"), keysTable)),
    el("h3", {}, "Per client token"), clientsTable,
    el("h2", {}, "Keys with the most 429s (24 h)"), attention);

  windowSel.addEventListener("change", () => { state.window = windowSel.value; loadTables(); });

  function renderGranularity() {
    clear(granularity, [["minute", "Per minute (1 h)"], ["hour", "Per hour (24 h)"]].map(([v, l]) =>
      el("button", { type: "button", "aria-pressed": String(state.granularity === v), onclick: () => { state.granularity = v; renderGranularity(); loadSeries(); } }, l)));
  }

  async function loadSummary() {
    const s = await api("GET", "/api/stats/summary");
    const label = { "1m": "Last minute", "1h": "Last hour", "24h": "Last 24 hours", month: "This month" };
    clear(tiles, ["1m", "1h", "24h", "month"].map((w) => {
      const c = (s.windows || {})[w] || {};
      const rate = c.calls ? c.successes / c.calls : null;
      const latency = c.latency_ms_avg ?? (c.calls && c.latency_ms_sum !== undefined ? c.latency_ms_sum / c.calls : null);
      return el("div", { class: "tile", "data-window": w },
        el("div", { class: "label" }, label[w]),
        el("div", { class: "value" }, num(c.calls), el("span", { class: "small muted" }, " calls")),
        el("div", { class: "sub" }, el("span", { class: c.failures ? "badge bad plain" : "badge ok plain" }, pct(rate) + " ok"), " ",
          `${num(c.failures)} failed · ${compact(c.tokens && c.tokens.total)} tokens` + (latency ? ` · ${Math.round(latency)} ms avg` : "")),
        w === "month" && s.timezone ? el("div", { class: "sub" }, "Calendar month in " + s.timezone) : null);
    }));
  }

  async function loadSeries() {
    const r = await api("GET", "/api/stats/series?granularity=" + state.granularity);
    // Tokens come as {prompt, candidates, …, total}; the chart shows the total.
    const points = (r.points || []).map((p) => Object.assign({}, p, { tokens: tokens(p.tokens) }));
    const minute = state.granularity === "minute";
    document.getElementById("calls-title").textContent = minute ? "Calls per minute, last hour" : "Calls per hour, last 24 hours";
    document.getElementById("tokens-title").textContent = minute ? "Tokens per minute, last hour" : "Tokens per hour, last 24 hours";
    const label = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    clear(callsChart, barChart(points, [["successes", "ok"], ["failures", "bad"]], label, "Calls"));
    clear(tokensChart, barChart(points, [["tokens", "tok"]], label, "Tokens"));
  }

  /** A stacked bar chart as SVG, with a y axis and a few time labels. */
  function barChart(points, series, label, name) {
    const W = 640, H = 220, L = 48, B = 24, T = 10, R = 8;
    const total = (p) => series.reduce((s, [k]) => s + (p[k] || 0), 0);
    const max = Math.max(1, ...points.map(total));
    const top = niceCeil(max);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    const sum = points.reduce((s, p) => s + total(p), 0);
    svg.setAttribute("aria-label", `${name}: ${num(sum)} in ${points.length} intervals, at most ${num(max)} in one`);
    const add = (tag, attrs, text) => {
      const n = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.append(n); return n;
    };
    for (let i = 0; i <= 4; i++) {
      const y = T + (H - T - B) * (1 - i / 4);
      add("line", { x1: L, x2: W - R, y1: y, y2: y, class: "axis" });
      add("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, compact(top * i / 4));
    }
    const n = Math.max(points.length, 1);
    const slot = (W - L - R) / n;
    const bw = Math.max(1, slot * 0.75);
    points.forEach((p, i) => {
      let y = H - B;
      for (const [k, cls] of series) {
        const v = p[k] || 0;
        if (!v) continue;
        const h = (H - T - B) * v / top;
        y -= h;
        const r = add("rect", { x: L + i * slot + (slot - bw) / 2, y, width: bw, height: h, class: cls });
        const t = document.createElementNS(SVG, "title");
        t.textContent = `${label(p.start_ms)}: ${num(v)} ${k}`;
        r.append(t);
      }
    });
    const every = Math.max(1, Math.ceil(n / 6));
    points.forEach((p, i) => {
      if (i % every === 0) add("text", { x: L + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" }, label(p.start_ms));
    });
    if (!sum) add("text", { x: (W + L) / 2, y: H / 2, "text-anchor": "middle" }, "No traffic in this period");
    return svg;
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function table(rows, columns, empty) {
    if (!rows.length) return el("div", { class: "empty" }, empty);
    return el("table", {}, el("thead", {}, el("tr", {}, columns.map(([h, , n]) => el("th", { class: n ? "num" : "" }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, columns.map(([, get, n]) => el("td", { class: n ? "num" : "" }, get(r)))))));
  }
  const rate = (r) => pct(r.calls ? r.successes / r.calls : null);
  function tokens(t) { return t && typeof t === "object" ? t.total : t; }

  async function loadTables() {
    const [models, keys, clients] = await Promise.all([
      api("GET", "/api/stats/models?window=" + state.window),
      api("GET", "/api/stats/keys?window=" + state.window),
      api("GET", "/api/stats/clients?window=" + state.window),
    ]);
    // A client by the name an admin gave it (Quotas page), and its fingerprint.
    clear(clientsTable, table(clients.rows || [], [["Client", (r) => el("span", {}, r.name ? el("b", {}, r.name, " ") : null, el("span", { class: "mono" }, r.mask || r.id || "(none)"))],
      ["Calls", (r) => num(r.calls), 1], ["Success", rate, 1], ["Failures", (r) => num(r.failures), 1], ["Tokens", (r) => compact(tokens(r.tokens)), 1]], "No calls in this window."));
    clear(modelsTable, table(models.rows || [], [["Model", (r) => el("span", { class: "model-name" }, r.id || "(none)")], ["Calls", (r) => num(r.calls), 1],
      ["Success", rate, 1], ["Failures", (r) => num(r.failures), 1], ["Tokens", (r) => compact(tokens(r.tokens)), 1]], "No calls in this window."));
    // Per key, what counts is every upstream attempt made with it.
    const keyRate = (r) => pct(r.attempts ? (r.attempts - r.failed_attempts) / r.attempts : null);
    clear(keysTable, table(keys.rows || [], [["Key", (r) => el("span", { class: "mono" }, r.mask || r.id)], ["Attempts", (r) => num(r.attempts ?? r.calls), 1],
      ["Success", r0 => (r0.attempts !== undefined ? keyRate(r0) : rate(r0)), 1], ["Failed", (r) => num(r.failed_attempts ?? r.failures), 1],
      ["429s", (r) => num(r.rate_limited_attempts), 1], ["Tokens", (r) => compact(tokens(r.tokens)), 1]], "No calls in this window."));
  }

  async function loadAttention() {
    const r = await api("GET", "/api/stats/attention?limit=10&status=429");
    clear(attention, table(r.rows || [], [["Key", (r) => el("span", { class: "mono" }, r.mask || r.id)],
      ["429 answers", (r) => num(r.count), 1],
      ["", (r) => el("a", { href: "/logs?key_id=" + encodeURIComponent(r.id) + "&status=429" }, "Errors")]], "No key was rate limited in the last 24 hours."));
  }

  async function loadAll() {
    const parts = [loadSummary(), loadSeries(), loadTables(), loadAttention()];
    const results = await Promise.allSettled(parts);
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) toast("Some statistics could not be loaded: " + failed[0].reason.message, "bad");
  }

  renderGranularity();
  loadAll();
})();
