// Keys: one card per key, filters, paging, batch verify/reset/delete, add keys by pasting text.
"use strict";
(function () {
  const { api, el, clear, toast, dialog, confirmAction, num, compact, pct, time, clock, ago, until, query, busy, root } = GB;
  const state = { page: 1, per_page: 48, status: "all", search: "", selected: new Set(), data: null };
  const STATUS = [["all", "All"], ["active", "Active"], ["cooling_down", "Cooling down"], ["disabled", "Disabled"]];

  const search = el("input", { type: "search", id: "key-search", placeholder: "Search mask or id…", "aria-label": "Search keys" });
  const statusBar = el("div", { class: "segmented", role: "group", "aria-label": "Filter by status" });
  const perPage = el("select", { id: "per-page", "aria-label": "Keys per page" },
    [24, 48, 96, 200, 500].map((n) => el("option", { value: n, selected: n === state.per_page }, n + " / page")));
  const addButton = el("button", { class: "primary", id: "add-keys", type: "button" }, "+ Add keys");
  const selectAll = el("input", { type: "checkbox", id: "select-page", "aria-label": "Select every key on this page" });
  const selectedCount = el("span", { id: "selected-count" });
  const verifyBtn = el("button", { type: "button", id: "verify-selected" }, "Verify");
  const resetBtn = el("button", { type: "button", id: "reset-selected" }, "Reset");
  const deleteBtn = el("button", { type: "button", id: "delete-selected", class: "danger" }, "Delete");
  const verifyAllBtn = el("button", { type: "button", id: "verify-all", class: "ghost" }, "Verify all");
  const progress = el("div", { class: "progress hidden", id: "verify-progress", role: "progressbar", "aria-label": "Verification progress", "aria-valuemin": "0" }, el("div"));
  const progressText = el("span", { class: "small muted", id: "verify-progress-text" });
  const cards = el("div", { class: "cards", id: "key-cards" });
  const pager = el("nav", { class: "pager", "aria-label": "Pages of keys" });

  clear(root,
    el("div", { class: "toolbar" }, statusBar, search, perPage, el("span", { class: "spacer" }), addButton),
    el("div", { class: "bulkbar", role: "group", "aria-label": "Selected keys" },
      el("label", { class: "small" }, selectAll, " Select page"), selectedCount,
      verifyBtn, resetBtn, deleteBtn, el("span", { class: "spacer" }), progress, progressText, verifyAllBtn),
    cards, pager);

  let searchTimer;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = search.value.trim(); state.page = 1; load(); }, 250);
  });
  perPage.addEventListener("change", () => { state.per_page = Number(perPage.value); state.page = 1; load(); });
  selectAll.addEventListener("change", () => {
    for (const k of (state.data && state.data.items) || []) {
      if (selectAll.checked) state.selected.add(k.id); else state.selected.delete(k.id);
    }
    render();
  });
  addButton.addEventListener("click", addKeys);
  verifyBtn.addEventListener("click", () => verify([...state.selected]));
  verifyAllBtn.addEventListener("click", verifyAll);
  resetBtn.addEventListener("click", async () => {
    await busy(resetBtn, async () => {
      const ids = [...state.selected];
      const r = await api("POST", "/api/keys/reset", { ids });
      toast(`Reset ${r.reset} key${r.reset === 1 ? "" : "s"}.`, "ok");
      await load();
    });
    if (state.data) render();
  });
  deleteBtn.addEventListener("click", () => remove([...state.selected]));

  async function load() {
    try {
      state.data = await api("GET", "/api/keys" + query({ page: state.page, per_page: state.per_page, status: state.status, search: state.search }));
    } catch (e) {
      toast("Could not load the keys: " + e.message, "bad");
      return;
    }
    if (state.data.pages && state.page > state.data.pages) { state.page = state.data.pages; return load(); }
    render();
  }

  function render() {
    const d = state.data;
    clear(statusBar, STATUS.map(([value, label]) => el("button", {
      type: "button", "aria-pressed": String(state.status === value), "data-status": value,
      onclick: () => { state.status = value; state.page = 1; load(); },
    }, label, " ", el("span", { class: "count" }, num(d.counts ? (value === "all" ? d.counts.total : d.counts[value]) : undefined)))));
    const items = d.items || [];
    clear(cards, items.length ? items.map(card) : el("div", { class: "empty panel" },
      d.counts && d.counts.total ? "No key matches these filters." : "No keys yet: add some with “+ Add keys”."));
    const n = state.selected.size;
    selectedCount.textContent = n ? `${n} selected` : "None selected";
    for (const b of [verifyBtn, resetBtn, deleteBtn]) b.disabled = n === 0;
    selectAll.checked = items.length > 0 && items.every((k) => state.selected.has(k.id));
    renderPager(d);
  }

  function statusBadge(k) {
    if (k.status === "active") return el("span", { class: "badge ok" }, "Active");
    if (k.status === "cooling_down") {
      const last = Math.max(0, ...(k.cooldowns || []).map((c) => c.until_ms));
      return el("span", { class: "badge warn", title: last ? "until " + time(last) : "" }, "Cooling down");
    }
    return el("span", { class: "badge bad" }, "Disabled");
  }

  function card(k) {
    const checked = state.selected.has(k.id);
    const s = k.stats_24h || {};
    const box = el("input", { type: "checkbox", "aria-label": "Select key " + k.mask, checked, "data-id": k.id });
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(k.id); else state.selected.delete(k.id);
      render();
    });
    const notes = [];
    if (k.status === "disabled") notes.push(el("div", { class: "note bad" }, el("b", {}, "Disabled: "), k.disabled_reason || "too many failures"));
    if ((k.cooldowns || []).length) {
      notes.push(el("div", { class: "note warn" }, el("b", {}, "Cooling down"),
        el("ul", { class: "check-list small" }, k.cooldowns.map((c) => el("li", {},
          el("span", { class: "chip" }, !c.model || c.model === "*" ? "all models" : c.model),
          `until ${clock(c.until_ms)} (${until(c.until_ms)})`)))));
    }
    if (k.last_error) {
      const e = k.last_error;
      notes.push(el("div", { class: "note" }, el("b", {}, "Last error "), el("span", { class: "muted" }, ago(e.at_ms)), el("br"),
        e.description || (e.class || "").replace(/_/g, " ")));
    }
    return el("article", { class: `card ${k.status}${checked ? " selected" : ""}`, "data-key": k.id, "aria-label": "Key " + k.mask },
      el("div", { class: "card-head" }, box, el("span", { class: "mono", title: "id " + k.id }, k.mask), statusBadge(k)),
      el("div", { class: "stats" },
        stat(num(k.consecutive_failures), "failures", "consecutive failures"),
        stat(compact(s.requests ?? s.calls), "requests", "upstream attempts with this key in the last 24 hours"),
        stat(pct(s.success_rate), "success", "success rate over the last 24 hours"),
        stat(compact(s.tokens), "tokens", "tokens in the last 24 hours")),
      notes,
      el("div", { class: "small muted" }, "Last 24 h · last used ", ago(k.last_used_ms), " · id ", el("code", {}, k.id)),
      el("div", { class: "card-actions" },
        el("button", { type: "button", class: "small", onclick: (ev) => verify([k.id], ev.currentTarget) }, "Verify"),
        el("button", { type: "button", class: "small", "data-action": "models", onclick: (ev) => models(k, ev.currentTarget) }, "Models"),
        el("button", { type: "button", class: "small", onclick: (ev) => busy(ev.currentTarget, async () => {
          await api("POST", `/api/keys/${k.id}/reset`); toast(`Reset ${k.mask}.`, "ok"); await load();
        }) }, "Reset"),
        el("button", { type: "button", class: "small danger", onclick: () => remove([k.id], k.mask) }, "Delete")));
  }

  /** One key's usage per model over the last 24 hours (GET /api/stats/keys/{id}/models). */
  async function models(k, button) {
    const r = await busy(button, () => api("GET", `/api/stats/keys/${k.id}/models?window=24h`));
    if (!r) return;
    const rows = r.rows || [];
    await dialog("Models used with " + k.mask, [
      el("p", { class: "muted small" }, "Last 24 hours, counted by whole hours: requests this key served, and every attempt made with it."),
      rows.length ? el("div", { class: "table-wrap" }, el("table", { id: "key-models" },
        el("thead", {}, el("tr", {}, ["Model", "Requests", "Attempts", "Failed attempts", "Tokens"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.map((m) => el("tr", {}, el("td", { class: "mono" }, m.id || "(none)"), el("td", {}, num(m.calls)),
          el("td", {}, num(m.attempts)), el("td", {}, num(m.failed_attempts)), el("td", {}, compact(m.tokens && m.tokens.total)))))))
        : el("p", { id: "key-models-empty" }, "This key has not been used in the last 24 hours.")]);
  }

  function stat(value, label, title) { return el("div", { class: "stat", title }, el("b", {}, value), el("span", {}, label)); }

  function renderPager(d) {
    const pages = d.pages || 1;
    const go = (p) => { state.page = p; load(); window.scrollTo(0, 0); };
    clear(pager,
      el("button", { type: "button", disabled: state.page <= 1, onclick: () => go(1), "aria-label": "First page" }, "«"),
      el("button", { type: "button", disabled: state.page <= 1, onclick: () => go(state.page - 1) }, "‹ Previous"),
      el("span", { class: "muted" }, `Page ${d.page || state.page} of ${pages} · ${num(d.total)} key${d.total === 1 ? "" : "s"}`),
      el("button", { type: "button", disabled: state.page >= pages, onclick: () => go(state.page + 1) }, "Next ›"),
      el("button", { type: "button", disabled: state.page >= pages, onclick: () => go(pages), "aria-label": "Last page" }, "»"));
  }

  async function remove(ids, mask) {
    const what = ids.length === 1 ? (mask ? "key " + mask : "1 key") : `${ids.length} keys`;
    if (!(await confirmAction("Delete " + what + "?", `The proxy stops using ${what} at once. This cannot be undone.`, "Delete"))) return;
    await busy(deleteBtn, async () => {
      const r = ids.length === 1 && mask ? (await api("DELETE", `/api/keys/${ids[0]}`), { deleted: 1, not_found: [] })
        : await api("POST", "/api/keys/delete", { ids });
      for (const id of ids) state.selected.delete(id);
      toast(`Deleted ${r.deleted} key${r.deleted === 1 ? "" : "s"}` + (r.not_found && r.not_found.length ? ` (${r.not_found.length} already gone)` : "") + ".", "ok");
      await load();
    });
    if (state.data) render();
  }

  /** Verifies keys in batches of 8, so the progress bar moves while hundreds are checked. */
  async function verify(ids, button) {
    if (!ids.length) return;
    const results = [];
    const bar = progress.firstChild;
    progress.classList.remove("hidden");
    progress.setAttribute("aria-valuemax", String(ids.length));
    for (const b of [verifyBtn, verifyAllBtn]) b.disabled = true;
    if (button) button.disabled = true;
    try {
      for (let i = 0; i < ids.length; i += 8) {
        const batch = ids.slice(i, i + 8);
        progressText.textContent = `Verifying ${Math.min(i + batch.length, ids.length)} of ${ids.length}…`;
        const r = await api("POST", "/api/keys/verify", { ids: batch });
        results.push(...(r.results || []));
        bar.style.width = (100 * results.length / ids.length) + "%";
        progress.setAttribute("aria-valuenow", String(results.length));
      }
    } catch (e) {
      toast("Verification stopped: " + e.message, "bad");
    } finally {
      progress.classList.add("hidden");
      bar.style.width = "0";
      progressText.textContent = "";
      verifyAllBtn.disabled = false;
      if (button) button.disabled = false;
      if (state.data) render();
    }
    if (!results.length) return;
    const bad = results.filter((r) => !r.ok);
    const summary = `${results.length - bad.length} of ${results.length} key${results.length === 1 ? "" : "s"} work.`;
    toast(summary, bad.length ? "warn" : "ok");
    if (bad.length) {
      dialog("Verification results", [el("p", {}, summary),
        el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, ["Key", "Status", "Why"].map((h) => el("th", {}, h)))),
          el("tbody", {}, bad.map((r) => el("tr", {}, el("td", { class: "mono" }, r.mask), el("td", {}, r.status || "–"),
            el("td", {}, (r.class ? r.class.replace(/_/g, " ") + ": " : "") + (r.message || "")))))))]);
    }
    await load();
  }

  async function verifyAll() {
    // Every key matching the current filter, page by page.
    const ids = [];
    try {
      for (let p = 1; ; p++) {
        const d = await api("GET", "/api/keys" + query({ page: p, per_page: 500, status: state.status, search: state.search }));
        ids.push(...d.items.map((k) => k.id));
        if (p >= (d.pages || 1)) break;
      }
    } catch (e) { toast(e.message, "bad"); return; }
    if (!ids.length) { toast("No keys to verify.", "warn"); return; }
    if (ids.length > 8 && !(await confirmAction(`Verify ${ids.length} keys?`, `Each key sends one small request to the upstream's TEST_MODEL.`, "Verify"))) return;
    await verify(ids);
  }

  async function addKeys() {
    const area = el("textarea", { id: "add-keys-text", rows: "8", placeholder: "Paste keys in any form: one per line, comma-separated, a JSON list, a .env line…", "aria-label": "Keys to add" });
    const answer = await dialog("Add keys", [
      el("p", { class: "muted small" }, "Keys are picked out of the text, de-duplicated and checked for format. Nothing is sent to Gemini."),
      area], [{ label: "Cancel", value: "cancel" }, { label: "Add keys", value: "add", primary: true }]);
    if (answer !== "add" || !area.value.trim()) return;
    const r = await busy(addButton, () => api("POST", "/api/keys", { text: area.value }));
    if (!r) return;
    const section = (title, list, kind, line) => list.length ? [el("h3", {}, el("span", { class: "badge " + kind }, `${list.length} ${title}`)),
      el("ul", { class: "result-list mono small" }, list.map((x) => el("li", {}, line(x))))] : [];
    toast(`Added ${r.added.length}, ${r.duplicates.length} duplicate${r.duplicates.length === 1 ? "" : "s"}, ${r.rejected.length} rejected.`,
      r.added.length ? "ok" : "warn");
    await load();
    await dialog("Keys added", el("div", { id: "add-result" },
      section("added", r.added, "ok", (x) => x.mask),
      section("already there", r.duplicates, "info", (x) => x.mask),
      section("rejected", r.rejected, "bad", (x) => `${x.mask}: ${x.reason}`),
      !r.added.length && !r.duplicates.length && !r.rejected.length ? el("p", {}, "No key found in the text.") : null));
  }

  load();
})();
