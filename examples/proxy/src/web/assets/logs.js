// Logs: the error log and the request log, with filters, a detail view, delete selected and
// delete older than.
"use strict";
(function () {
  const { api, el, clear, toast, dialog, confirmAction, num, time, query, busy, fromLocalInput, root } = GB;
  const params = new URLSearchParams(location.search);
  const LIMIT = 50;
  const state = { kind: params.get("kind") === "requests" ? "requests" : "errors", offset: 0, selected: new Set(), data: null };

  const tabs = el("div", { class: "segmented", role: "group", "aria-label": "Which log" });
  const f = {
    key: el("input", { type: "text", id: "f-key", placeholder: "key id", size: "16", value: params.get("key_id") || "" }),
    model: el("input", { type: "text", id: "f-model", placeholder: "model", size: "16", value: params.get("model") || "" }),
    status: el("input", { type: "number", id: "f-status", placeholder: "status", min: "100", max: "599", value: params.get("status") || "" }),
    success: el("select", { id: "f-success" }, el("option", { value: "" }, "Any result"), el("option", { value: "true" }, "Succeeded"), el("option", { value: "false" }, "Failed")),
    since: el("input", { type: "datetime-local", id: "f-since" }),
    until: el("input", { type: "datetime-local", id: "f-until" }),
    q: el("input", { type: "search", id: "f-q", placeholder: "text in message", value: params.get("search") || "" }),
  };
  const labelled = (text, input, cls) => el("label", { class: "small " + (cls || "") }, text, el("br"), input);
  const filters = el("form", { class: "toolbar", id: "log-filters", "aria-label": "Filters" },
    labelled("Key", f.key), labelled("Model", f.model), labelled("Status", f.status),
    labelled("Result", f.success, "only-requests"), labelled("From", f.since), labelled("To", f.until), labelled("Text", f.q, "only-errors"),
    el("button", { type: "submit", class: "primary" }, "Apply"),
    el("button", { type: "reset" }, "Clear"));
  const deleteSelected = el("button", { type: "button", class: "danger", id: "delete-logs" }, "Delete selected");
  const olderThan = el("input", { type: "datetime-local", id: "older-than", "aria-label": "Delete entries older than" });
  const deleteOlder = el("button", { type: "button", class: "danger", id: "delete-older" }, "Delete older than");
  const selectAll = el("input", { type: "checkbox", "aria-label": "Select every entry shown" });
  const tableBox = el("div", { class: "table-wrap", id: "log-table" });
  const pager = el("nav", { class: "pager", "aria-label": "Pages of the log" });

  clear(root, el("div", { class: "toolbar" }, tabs), filters,
    el("div", { class: "bulkbar" }, el("label", { class: "small" }, selectAll, " Select shown"), deleteSelected,
      el("span", { class: "spacer" }), olderThan, deleteOlder),
    tableBox, pager);

  filters.addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; load(); });
  filters.addEventListener("reset", () => setTimeout(() => { state.offset = 0; load(); }));
  selectAll.addEventListener("change", () => {
    for (const item of (state.data && state.data.items) || []) selectAll.checked ? state.selected.add(item.id) : state.selected.delete(item.id);
    render();
  });
  deleteSelected.addEventListener("click", async () => {
    const ids = [...state.selected];
    if (!(await confirmAction(`Delete ${ids.length} entr${ids.length === 1 ? "y" : "ies"}?`, "They are removed from the database.", "Delete"))) return;
    await busy(deleteSelected, async () => {
      const r = await api("DELETE", "/api/logs/" + state.kind, { ids });
      state.selected.clear();
      toast(`Deleted ${num(r.deleted)} entr${r.deleted === 1 ? "y" : "ies"}.`, "ok");
      await load();
    });
    if (state.data) render();
  });
  deleteOlder.addEventListener("click", async () => {
    const before = fromLocalInput(olderThan.value);
    if (!before) { toast("Pick a date and time first.", "warn"); olderThan.focus(); return; }
    if (!(await confirmAction("Delete older entries?", `Every ${state.kind === "errors" ? "error" : "request"} log entry before ${time(before)} is removed.`, "Delete"))) return;
    await busy(deleteOlder, async () => {
      const r = await api("DELETE", "/api/logs/" + state.kind, { before_ms: before });
      toast(`Deleted ${num(r.deleted)} entr${r.deleted === 1 ? "y" : "ies"}.`, "ok");
      await load();
    });
  });

  function renderTabs() {
    clear(tabs, [["errors", "Error log"], ["requests", "Request log"]].map(([k, l]) => el("button", {
      type: "button", "aria-pressed": String(state.kind === k), "data-kind": k,
      onclick: () => { state.kind = k; state.offset = 0; state.selected.clear(); renderTabs(); load(); },
    }, l)));
    for (const n of filters.querySelectorAll(".only-requests")) n.classList.toggle("hidden", state.kind !== "requests");
    for (const n of filters.querySelectorAll(".only-errors")) n.classList.toggle("hidden", state.kind !== "errors");
  }

  async function load() {
    const q = { limit: LIMIT, offset: state.offset, key_id: f.key.value.trim(), model: f.model.value.trim(), status: f.status.value,
      from_ms: fromLocalInput(f.since.value), to_ms: fromLocalInput(f.until.value) };
    if (state.kind === "errors") q.search = f.q.value.trim(); else q.success = f.success.value;
    try { state.data = await api("GET", `/api/logs/${state.kind}` + query(q)); }
    catch (e) { toast("Could not load the log: " + e.message, "bad"); return; }
    render();
  }

  const statusBadge = (s, ok) => {
    const good = ok ?? (s && s < 400);
    return el("span", { class: "badge plain " + (good ? "ok" : "bad") }, s || "–");
  };

  function render() {
    const items = (state.data && state.data.items) || [];
    const errors = state.kind === "errors";
    const check = (item) => {
      const box = el("input", { type: "checkbox", checked: state.selected.has(item.id), "aria-label": "Select entry " + item.id });
      box.addEventListener("change", () => { box.checked ? state.selected.add(item.id) : state.selected.delete(item.id); render(); });
      return box;
    };
    const open = (item) => el("button", { type: "button", class: "small", onclick: () => details(item) }, "Details");
    const cols = errors
      ? [["Time", (i) => time(i.at_ms)], ["Key", (i) => el("span", { class: "mono" }, i.key_mask || "–")], ["Model", (i) => i.model || "–"],
        ["Status", (i) => statusBadge(i.status, false)], ["Class", (i) => (i.class || "").replace(/_/g, " ")],
        ["Message", (i) => el("div", { class: "ellipsis", title: i.message || "" }, i.message || "")]]
      : [["Time", (i) => time(i.at_ms)], ["Key", (i) => el("span", { class: "mono" }, i.key_mask || "–")], ["Model", (i) => i.model || "–"],
        ["Client", (i) => el("span", {}, i.client_name ? el("b", {}, i.client_name, " ") : null, el("span", { class: "mono" }, i.client_mask || i.client || "–"))],
        ["Status", (i) => statusBadge(i.status, i.success)],
        ["Latency", (i) => (i.latency_ms !== undefined ? num(i.latency_ms) + " ms" : "–")],
        ["Tokens", (i) => num(i.tokens && typeof i.tokens === "object" ? i.tokens.total : i.tokens)],
        ["Attempts", (i) => num(typeof i.attempts === "number" ? i.attempts : undefined)]];
    deleteSelected.disabled = state.selected.size === 0;
    deleteSelected.textContent = state.selected.size ? `Delete selected (${state.selected.size})` : "Delete selected";
    selectAll.checked = items.length > 0 && items.every((i) => state.selected.has(i.id));
    if (!items.length) clear(tableBox, el("div", { class: "empty" }, "No entries match."));
    else clear(tableBox, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, el("span", { class: "sr-only" }, "Select")), cols.map(([h]) => el("th", {}, h)), el("th", {}, ""))),
      el("tbody", {}, items.map((i) => el("tr", { "data-id": i.id }, el("td", {}, check(i)), cols.map(([, get]) => el("td", {}, get(i))), el("td", {}, open(i)))))));
    const total = state.data.total;
    const more = total !== undefined ? state.offset + items.length < total : Boolean(state.data.has_more);
    clear(pager,
      el("button", { type: "button", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - LIMIT); load(); } }, "‹ Newer"),
      el("span", { class: "muted" }, items.length ? `${num(state.offset + 1)}–${num(state.offset + items.length)}` + (total !== undefined ? ` of ${num(total)}` : "") : ""),
      el("button", { type: "button", disabled: !more, onclick: () => { state.offset += LIMIT; load(); } }, "Older ›"));
  }

  async function details(item) {
    // An error is fetched by its id; a request's attempts by its request_id.
    let entry;
    try {
      entry = state.kind === "errors" ? await api("GET", `/api/logs/errors/${item.id}`)
        : Object.assign({}, item, await api("GET", `/api/logs/requests/${item.request_id}`));
    } catch (e) { toast(e.message, "bad"); return; }
    const id = item.id;
    const rows = Object.entries(entry).filter(([k, v]) => !["request_body", "attempts"].includes(k) && (v === null || typeof v !== "object"));
    const content = [el("dl", { class: "details" }, rows.map(([k, v]) => [el("dt", {}, k.replace(/_/g, " ")), el("dd", {}, k.endsWith("_ms") && k !== "latency_ms" && v ? time(v) : String(v ?? "–"))]))];
    if (Array.isArray(entry.attempts)) {
      content.push(el("h3", {}, "Attempts"), el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Time", "Key", "Model", "Status", "Class", "Latency"].map((h) => el("th", {}, h)))),
        el("tbody", {}, entry.attempts.map((a) => el("tr", {}, el("td", {}, time(a.at_ms)), el("td", { class: "mono" }, a.key_mask || "–"),
          el("td", {}, a.model || "–"), el("td", {}, a.status ?? "–"), el("td", {}, (a.class || "").replace(/_/g, " ")),
          el("td", {}, a.latency_ms !== undefined ? num(a.latency_ms) + " ms" : "–")))))));
    }
    if (entry.request_body !== undefined && entry.request_body !== null) {
      let body = entry.request_body;
      if (typeof body === "string") { try { body = JSON.parse(body); } catch (e) { /* keep the text */ } }
      content.push(el("h3", {}, "Request body"), el("pre", { class: "json" }, typeof body === "string" ? body : JSON.stringify(body, null, 2)));
    }
    for (const [k, v] of Object.entries(entry)) if (v && typeof v === "object" && !["attempts", "request_body"].includes(k)) content.push(el("h3", {}, k), el("pre", { class: "json" }, JSON.stringify(v, null, 2)));
    await dialog(`${state.kind === "errors" ? "Error" : "Request"} #${id}`, content);
  }

  renderTabs();
  load();
})();
