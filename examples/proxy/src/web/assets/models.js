// Model helper: the models the upstream serves (with the derived variants), side-by-side
// comparison, copy an id, and a check of the configured model names against the list.
"use strict";
(function () {
  const { api, el, clear, toast, num, copy, root } = GB;
  const DERIVED = [["-search", "search"], ["-image", "image"], ["-non-thinking", "non-thinking"]];
  const state = { models: [], config: {}, picked: [], filter: "", method: "all" };

  const filter = el("input", { type: "search", id: "model-filter", placeholder: "Filter models…", "aria-label": "Filter models" });
  const methodSel = el("select", { id: "model-method", "aria-label": "Filter by method" });
  const compareBox = el("section", { id: "compare", "aria-labelledby": "compare-title" });
  const checkBox = el("section", { id: "compat", class: "panel", "aria-labelledby": "compat-title" });
  const tableBox = el("div", { class: "table-wrap", id: "model-table" });
  clear(root, el("div", { class: "models-layout" },
    checkBox,
    el("div", {},
      el("div", { class: "toolbar" }, filter, methodSel, el("span", { class: "spacer" }),
        el("span", { class: "small muted", id: "pick-hint" }, "Tick two or more models to compare them.")),
      tableBox),
    compareBox));
  filter.addEventListener("input", () => { state.filter = filter.value.trim().toLowerCase(); renderTable(); });
  methodSel.addEventListener("change", () => { state.method = methodSel.value; renderTable(); });

  const idOf = (m) => (m.name || "").replace(/^models\//, "");

  function describe(m, baseIds) {
    const id = idOf(m);
    let derived = null;
    for (const [suffix, label] of DERIVED) {
      if (id.endsWith(suffix) && baseIds.has(id.slice(0, -suffix.length))) derived = { base: id.slice(0, -suffix.length), label };
    }
    let thinking = Boolean(m.thinking);
    if (derived && derived.label === "non-thinking") thinking = false;
    return { id, m, derived, thinking };
  }

  async function load() {
    let list, config;
    try {
      [list, config] = await Promise.all([api("GET", "/api/models"), api("GET", "/api/config")]);
    } catch (e) {
      clear(tableBox, el("div", { class: "empty" }, "Could not load the models: " + e.message));
      toast("Could not load the models: " + e.message, "bad");
      return;
    }
    const raw = (list && list.models) || [];
    const baseIds = new Set(raw.map(idOf));
    state.models = raw.map((m) => describe(m, baseIds));
    // The base ids are those not derived from another model in the list.
    state.baseIds = new Set(state.models.filter((x) => !x.derived).map((x) => x.id));
    state.config = Object.fromEntries(((config && config.settings) || []).map((s) => [s.name, s.value]));
    const methods = [...new Set(state.models.flatMap((x) => x.m.supportedGenerationMethods || []))].sort();
    clear(methodSel, el("option", { value: "all" }, "Any method"), methods.map((m) => el("option", { value: m }, m)));
    renderCheck();
    renderTable();
    renderCompare();
  }

  function renderTable() {
    const rows = state.models.filter((x) =>
      (!state.filter || x.id.toLowerCase().includes(state.filter) || String(x.m.displayName || "").toLowerCase().includes(state.filter)) &&
      (state.method === "all" || (x.m.supportedGenerationMethods || []).includes(state.method)));
    if (!rows.length) { clear(tableBox, el("div", { class: "empty" }, state.models.length ? "No model matches." : "The upstream lists no models.")); return; }
    clear(tableBox, el("table", {},
      el("caption", { class: "sr-only" }, "Models served by the upstream"),
      el("thead", {}, el("tr", {}, el("th", {}, el("span", { class: "sr-only" }, "Compare")), el("th", {}, "Model"),
        el("th", { class: "num" }, "Input limit"), el("th", { class: "num" }, "Output limit"), el("th", {}, "Thinking"), el("th", {}, "Methods"), el("th", {}, ""))),
      el("tbody", {}, rows.map((x) => {
        const box = el("input", { type: "checkbox", checked: state.picked.includes(x.id), "aria-label": "Compare " + x.id, "data-model": x.id });
        box.addEventListener("change", () => {
          if (box.checked) state.picked.push(x.id); else state.picked = state.picked.filter((p) => p !== x.id);
          renderCompare();
        });
        return el("tr", { "data-model": x.id },
          el("td", {}, box),
          el("td", {}, el("div", { class: "model-name" }, x.id), el("div", { class: "small muted" }, x.m.displayName || "",
            x.derived ? [" ", el("span", { class: "badge info plain" }, x.derived.label + " of " + x.derived.base)] : null)),
          el("td", { class: "num" }, num(x.m.inputTokenLimit)),
          el("td", { class: "num" }, num(x.m.outputTokenLimit)),
          el("td", {}, x.thinking ? el("span", { class: "badge ok" }, "yes") : el("span", { class: "badge plain" }, "no")),
          el("td", {}, (x.m.supportedGenerationMethods || []).map((m) => el("span", { class: "chip" }, m))),
          el("td", {}, el("button", { type: "button", class: "small", onclick: () => copy(x.id), "aria-label": "Copy " + x.id }, "Copy id")));
      }))));
  }

  const FIELDS = [
    ["Display name", (x) => x.m.displayName],
    ["Derived from", (x) => x.derived ? `${x.derived.base} (${x.derived.label})` : "—"],
    ["Input token limit", (x) => num(x.m.inputTokenLimit)],
    ["Output token limit", (x) => num(x.m.outputTokenLimit)],
    ["Thinking", (x) => x.thinking ? "yes" : "no"],
    ["Methods", (x) => (x.m.supportedGenerationMethods || []).join(", ")],
    ["Temperature", (x) => x.m.temperature ?? "—"],
    ["Max temperature", (x) => x.m.maxTemperature ?? "—"],
    ["topP", (x) => x.m.topP ?? "—"],
    ["topK", (x) => x.m.topK ?? "—"],
    ["Version", (x) => x.m.version ?? "—"],
    ["Description", (x) => x.m.description ?? "—"],
  ];

  function renderCompare() {
    const picked = state.picked.map((id) => state.models.find((x) => x.id === id)).filter(Boolean);
    if (picked.length < 2) {
      clear(compareBox, picked.length === 1 ? el("p", { class: "muted" }, `${picked[0].id} picked: tick one more to compare.`) : null);
      return;
    }
    clear(compareBox,
      el("div", { class: "toolbar" }, el("h2", { id: "compare-title" }, "Side by side"), el("span", { class: "spacer" }),
        el("button", { type: "button", class: "small", onclick: () => { state.picked = []; renderTable(); renderCompare(); } }, "Clear")),
      el("div", { class: "table-wrap" }, el("table", { class: "compare" },
        el("thead", {}, el("tr", {}, el("th", {}, ""), picked.map((x) => el("th", { scope: "col" }, el("span", { class: "model-name" }, x.id), " ",
          el("button", { type: "button", class: "small ghost", onclick: () => copy(x.id), "aria-label": "Copy " + x.id }, "Copy"))))),
        el("tbody", {}, FIELDS.map(([label, get]) => {
          const values = picked.map((x) => String(get(x) ?? "—"));
          const differ = new Set(values).size > 1;
          return el("tr", {}, el("th", { scope: "row" }, label), values.map((v) => el("td", { class: differ ? "diff" : "" }, v)));
        })))),
      el("p", { class: "small muted" }, "Highlighted rows differ between the models."));
  }

  /** The configured model names the upstream does not serve. */
  function renderCheck() {
    const c = state.config;
    const names = [];
    const add = (setting, value) => { if (value) names.push([setting, String(value)]); };
    add("TEST_MODEL", c.TEST_MODEL);
    for (const s of ["THINKING_MODELS", "SEARCH_MODELS", "IMAGE_MODELS"]) for (const v of asList(c[s])) add(s, v);
    const budgets = c.THINKING_BUDGET_MAP;
    if (budgets && typeof budgets === "object" && !Array.isArray(budgets)) for (const k of Object.keys(budgets)) add("THINKING_BUDGET_MAP", k);
    const missing = names.filter(([, n]) => !state.baseIds.has(n.replace(/^models\//, "")));
    const title = el("h2", { id: "compat-title" }, "Compatibility check");
    if (!names.length) { clear(checkBox, title, el("p", { class: "muted" }, "No model names are configured.")); return; }
    clear(checkBox, title,
      missing.length
        ? el("p", {}, el("span", { class: "badge bad" }, `${missing.length} configured name${missing.length === 1 ? "" : "s"} not served`),
          " The upstream does not list these models; requests naming them will fail.")
        : el("p", {}, el("span", { class: "badge ok" }, "All configured models are served"), ` ${names.length} name${names.length === 1 ? "" : "s"} checked.`),
      el("ul", { class: "check-list", id: "compat-list" }, names.map(([setting, name]) => {
        const ok = state.baseIds.has(name.replace(/^models\//, ""));
        return el("li", { "data-ok": String(ok) }, ok ? el("span", { class: "badge ok" }, "served") : el("span", { class: "badge bad" }, "not served"),
          el("span", { class: "model-name" }, name), el("span", { class: "muted small" }, "in " + setting),
          !ok ? el("a", { href: "/config#" + setting, class: "small" }, "Edit") : null);
      })));
  }

  function asList(v) {
    if (Array.isArray(v)) return v;
    if (typeof v === "string" && v.trim()) return v.split(",").map((s) => s.trim()).filter(Boolean);
    return [];
  }

  load();
})();
