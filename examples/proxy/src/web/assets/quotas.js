// Quotas: each client token's use of the current minute, day and month against its limits,
// the default limits for every client, and per client a name and its own limits.
"use strict";
(function () {
  const { api, el, clear, toast, dialog, confirmAction, busy, num, compact, root } = GB;
  const FIELDS = [
    ["requests_per_minute", "Requests / minute", "requests_minute"],
    ["tokens_per_minute", "Tokens / minute", "tokens_minute"],
    ["tokens_per_day", "Tokens / day (UTC)", "tokens_day"],
    ["tokens_per_month", "Tokens / month (UTC)", "tokens_month"],
  ];
  let data = { default: {}, clients: [], sync_interval_seconds: 5 };

  const defaultsBox = el("div", { class: "panel", id: "quota-default" });
  const tableBox = el("div", { class: "table-wrap", id: "quota-table" });
  const note = el("span", { class: "small muted", id: "quota-note" });
  clear(root,
    el("h2", {}, "Default for every client"), defaultsBox,
    el("div", { class: "toolbar" }, el("h2", {}, "Clients"), el("span", { class: "spacer" }), note,
      el("button", { type: "button", class: "small", onclick: () => load() }, "Refresh")),
    tableBox);

  /** Number inputs for the four limits (empty: no limit). */
  function limitInputs(prefix, limits) {
    return FIELDS.map(([key, label]) => {
      const id = prefix + "-" + key;
      const input = el("input", { type: "number", min: "0", step: "1", id, name: key, placeholder: "no limit", inputmode: "numeric" });
      const v = limits && limits[key];
      input.value = v === null || v === undefined ? "" : String(v);
      return el("div", { class: "quota-field" }, el("label", { for: id }, label), input);
    });
  }

  /** The limits the inputs under `box` say, or throws a message. */
  function readLimits(box) {
    const limits = {};
    for (const [key, label] of FIELDS) {
      const text = box.querySelector(`input[name="${key}"]`).value.trim();
      if (text === "") continue;
      if (!/^\d+$/.test(text)) throw label + ": expected a whole number ≥ 0 (empty: no limit)";
      limits[key] = Number(text);
    }
    return limits;
  }

  function renderDefault() {
    const fields = el("div", { class: "quota-fields" }, limitInputs("default", data.default));
    const error = el("div", { class: "field-error", role: "alert" });
    const save = el("button", { type: "button", class: "primary", id: "save-default" }, "Save default");
    save.addEventListener("click", () => busy(save, async () => {
      let limits;
      try { limits = readLimits(fields); } catch (e) { error.textContent = e; return; }
      error.textContent = "";
      data = await api("PUT", "/api/quotas/default", limits);
      toast("Default limits saved", "ok");
      render();
    }));
    clear(defaultsBox,
      el("p", { class: "small muted" }, "Applies to every client token without limits of its own. Empty: no limit."),
      fields, el("div", { class: "toolbar" }, save), error);
  }

  /** "used / limit" with a meter when limited. */
  function use(used, limit) {
    if (limit === null || limit === undefined) return el("span", {}, compact(used), el("span", { class: "muted" }, " / –"));
    const full = used >= limit;
    return el("div", { class: "quota-use" },
      el("span", { class: full ? "badge bad plain" : "" }, compact(used), " / ", compact(limit)),
      el("meter", { min: "0", max: String(limit), value: String(Math.min(used, limit)), high: String(limit * 0.8), optimum: "0", "aria-label": `${num(used)} of ${num(limit)}` }));
  }

  function clientLabel(c) {
    return el("div", {},
      c.name ? el("div", { class: "quota-name" }, c.name) : null,
      el("span", { class: "mono" }, c.mask || c.id),
      c.admin_token ? el("span", { class: "badge plain" }, "AUTH_TOKEN") : null,
      c.allowed ? null : el("span", { class: "badge warn plain", title: "No longer in ALLOWED_TOKENS" }, "removed"));
  }

  function renderTable() {
    const rows = data.clients || [];
    if (!rows.length) { clear(tableBox, el("div", { class: "empty" }, "No client token is allowed (ALLOWED_TOKENS is empty).")); return; }
    clear(tableBox, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Client"), FIELDS.map(([, label]) => el("th", {}, label)), el("th", {}, "Limits"), el("th", {}, ""))),
      el("tbody", {}, rows.map((c) => el("tr", { "data-client": c.id },
        el("td", {}, clientLabel(c)),
        FIELDS.map(([key, , usedKey]) => el("td", {}, use((c.used || {})[usedKey] || 0, (c.effective || {})[key]))),
        el("td", {}, c.limits ? el("span", { class: "badge plain" }, "own") : el("span", { class: "muted small" }, "default")),
        el("td", {},
          el("button", { type: "button", class: "small", onclick: () => edit(c) }, "Edit"), " ",
          (c.limits || c.name) ? el("button", { type: "button", class: "small danger", onclick: () => reset(c) }, "Reset") : null))))));
  }

  async function edit(c) {
    const name = el("input", { type: "text", id: "client-name", maxlength: "100", placeholder: "e.g. Team A" });
    name.value = c.name || "";
    const own = el("input", { type: "checkbox", id: "client-own" });
    own.checked = !!c.limits;
    const fields = el("div", { class: "quota-fields" }, limitInputs("client", c.limits || c.effective));
    const error = el("div", { class: "field-error", role: "alert" });
    const sync = () => fields.querySelectorAll("input").forEach((i) => { i.disabled = !own.checked; });
    own.addEventListener("change", sync);
    sync();
    const content = el("div", {},
      el("p", { class: "small muted" }, "Client ", el("span", { class: "mono" }, c.mask || c.id), " (id ", el("span", { class: "mono" }, c.id), ")"),
      el("div", { class: "quota-field" }, el("label", { for: "client-name" }, "Name"), name),
      el("p", {}, own, " ", el("label", { for: "client-own" }, "Own limits (instead of the default)")),
      fields, error);
    for (;;) {
      const answer = await dialog("Client quota", content, [{ label: "Cancel", value: "cancel" }, { label: "Save", value: "save", primary: true }]);
      if (answer !== "save") return;
      const body = { name: name.value.trim() || null };
      try { body.limits = own.checked ? readLimits(fields) : null; } catch (e) { error.textContent = e; continue; }
      try {
        await api("PUT", "/api/quotas/clients/" + encodeURIComponent(c.id), body);
        toast("Saved", "ok");
        return load();
      } catch (e) { error.textContent = e.message; }
    }
  }

  async function reset(c) {
    if (!await confirmAction("Reset client", "Forget this client's name and own limits? The default limits apply again.", "Reset")) return;
    await busy(null, async () => {
      await api("DELETE", "/api/quotas/clients/" + encodeURIComponent(c.id));
      toast("Reset", "ok");
      await load();
    });
  }

  function render() {
    renderDefault();
    renderTable();
    note.textContent = `Use as of now on this instance; other instances' use arrives within ${data.sync_interval_seconds} s.`;
  }

  async function load() {
    try { data = await api("GET", "/api/quotas"); }
    catch (e) { toast("Could not load the quotas: " + e.message, "bad"); return; }
    render();
  }

  load();
})();
