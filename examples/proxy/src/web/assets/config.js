// Config: every setting by group, with its type, value (secrets masked) and source; edit with
// validation messages; saving applies the changes to the running proxy.
"use strict";
(function () {
  const { api, el, clear, toast, confirmAction, busy, root } = GB;
  const state = { settings: [], edits: new Map(), errors: new Map(), filter: "" };

  const filter = el("input", { type: "search", id: "config-filter", placeholder: "Find a setting…", "aria-label": "Find a setting" });
  const groupsBox = el("div", { id: "config-groups" });
  const saveButton = el("button", { type: "button", class: "primary", id: "save-config" }, "Save changes");
  const discardButton = el("button", { type: "button", id: "discard-config" }, "Discard");
  const saveInfo = el("span", { class: "small muted", id: "save-info" });
  const formError = el("div", { class: "field-error", id: "config-error", role: "alert" });
  clear(root,
    el("div", { class: "toolbar" }, filter, el("span", { class: "spacer" }),
      el("span", { class: "small muted" }, "Saved values are applied at once and kept in the database; secrets go to the secrets file next to it.")),
    groupsBox,
    el("div", { class: "savebar" }, saveButton, discardButton, saveInfo, formError));
  filter.addEventListener("input", () => { state.filter = filter.value.trim().toLowerCase(); render(); });
  saveButton.addEventListener("click", save);
  discardButton.addEventListener("click", () => { state.edits.clear(); state.errors.clear(); formError.textContent = ""; render(); });

  async function load(focus) {
    try { state.settings = (await api("GET", "/api/config")).settings || []; }
    catch (e) { toast("Could not load the settings: " + e.message, "bad"); return; }
    render();
    if (focus) focusSetting(focus);
  }

  /** The text a setting's value is edited as. */
  function textOf(s, value) {
    if (value === null || value === undefined) return "";
    if (s.type === "list") return Array.isArray(value) ? value.join("\n") : String(value);
    if (s.type === "object" || s.type === "secret object" || s.type === "list of objects") return JSON.stringify(value, null, 2);
    return String(value);
  }

  /** The JSON value to send for an edited text, or throws a message. */
  function valueOf(s, text) {
    switch (s.type) {
      case "bool": return text === true || text === "true";
      case "int": {
        if (!/^-?\d+$/.test(String(text).trim())) throw "expected a whole number";
        return Number(text);
      }
      case "float": {
        const n = Number(text);
        if (String(text).trim() === "" || !Number.isFinite(n)) throw "expected a number";
        return n;
      }
      case "list": case "secret list":
        return String(text).split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
      case "object": case "secret object": case "list of objects": {
        let v;
        try { v = JSON.parse(text); } catch (e) { throw "not valid JSON: " + e.message; }
        if (s.type !== "list of objects" && (v === null || typeof v !== "object" || Array.isArray(v))) throw "expected a JSON object";
        if (s.type === "list of objects" && !Array.isArray(v)) throw "expected a JSON list";
        return v;
      }
      default: return String(text);
    }
  }

  function render() {
    const groups = new Map();
    for (const s of state.settings) {
      if (state.filter && !(s.name.toLowerCase().includes(state.filter) || (s.help || "").toLowerCase().includes(state.filter))) continue;
      if (!groups.has(s.group)) groups.set(s.group, []);
      groups.get(s.group).push(s);
    }
    clear(groupsBox, groups.size ? [...groups].map(([group, list]) => el("details", { class: "config-group panel", open: true },
      el("summary", {}, group, " ", el("span", { class: "count" }, list.length)),
      list.map(setting))) : el("div", { class: "empty panel" }, "No setting matches."));
    updateBar();
  }

  function setting(s) {
    const editable = s.supported && s.live && s.name !== "API_KEYS";
    const id = "set-" + s.name;
    const edited = state.edits.has(s.name);
    const error = state.errors.get(s.name);
    const onEdit = (raw) => {
      const original = s.secret ? "" : (s.type === "bool" ? Boolean(s.value) : textOf(s, s.value));
      if (raw === original || (s.secret && raw === "")) state.edits.delete(s.name); else state.edits.set(s.name, raw);
      state.errors.delete(s.name);
      const box = document.getElementById("row-" + s.name);
      if (box) box.classList.toggle("dirty", state.edits.has(s.name));
      updateBar();
    };
    let input;
    const current = edited ? state.edits.get(s.name) : undefined;
    if (s.type === "bool") {
      input = el("input", { type: "checkbox", id, checked: edited ? current : Boolean(s.value), disabled: !editable });
      input.addEventListener("change", () => onEdit(input.checked));
    } else if (s.choices && Array.isArray(s.choices)) {
      input = el("select", { id, disabled: !editable }, s.choices.map((c) => el("option", { value: c, selected: (edited ? current : s.value) === c }, c)));
      input.addEventListener("change", () => onEdit(input.value));
    } else if (["list", "object", "list of objects", "secret list", "secret object"].includes(s.type)) {
      const text = edited ? current : (s.secret ? "" : textOf(s, s.value));
      input = el("textarea", { id, rows: String(Math.min(10, Math.max(2, text.split("\n").length + 1))), disabled: !editable,
        placeholder: s.type === "secret object" ? "Hidden. Type the whole JSON object to replace it." : s.secret ? "Hidden. Type new values (one a line) to replace them all." : (s.type === "list" ? "One item a line" : "JSON") });
      input.value = text;
      input.addEventListener("input", () => onEdit(input.value));
    } else {
      const type = s.secret ? "password" : (s.type === "int" || s.type === "float" ? "number" : "text");
      input = el("input", { type, id, disabled: !editable, step: s.type === "float" ? "any" : undefined, autocomplete: s.secret ? "new-password" : "off",
        placeholder: s.secret ? "Hidden. Type a new value to replace it." : "" });
      input.value = edited ? current : (s.secret ? "" : textOf(s, s.value));
      input.addEventListener("input", () => onEdit(input.value));
    }
    if (error) { input.setAttribute("aria-invalid", "true"); input.setAttribute("aria-describedby", "err-" + s.name); }
    const sourceClass = s.source === "database" || s.source === "secrets_file" ? "info" : s.source === "environment" ? "ok" : "plain";
    return el("div", { class: "setting" + (edited ? " dirty" : "") + (error ? " invalid" : ""), id: "row-" + s.name, "data-setting": s.name },
      el("div", { class: "meta" },
        el("label", { class: "name", for: id, id: s.name }, s.name),
        el("div", {}, el("span", { class: "chip" }, s.type), " ", el("span", { class: "badge plain " + sourceClass, title: "where the value comes from" }, String(s.source).replace(/_/g, " ")),
          !s.supported ? [" ", el("span", { class: "badge warn plain" }, "not supported")] : null,
          s.supported && !s.live ? [" ", el("span", { class: "badge plain" }, "restart to change")] : null),
        el("div", { class: "small muted" }, s.help || "")),
      el("div", { class: "editor" }, input,
        s.secret && !isEmpty(s.value) ? el("div", { class: "small muted" }, "Current: ", el("code", {}, shownSecret(s.value))) : null,
        s.name === "API_KEYS" ? el("div", { class: "small muted" }, "Manage keys on the ", el("a", { href: "/keys" }, "Keys page"), ".") : null,
        s.name === "PROXIES" ? proxyCheck() : null,
        !s.supported ? el("div", { class: "small muted" }, "This version reads this setting but does not act on it.") : null,
        s.supported && !s.live && s.name !== "API_KEYS" ? el("div", { class: "small muted" }, "Takes effect at start: set it in .env or the environment.") : null,
        el("div", { class: "field-error", id: "err-" + s.name }, error || ""),
        s.source === "database" && editable ? el("div", {}, el("button", { type: "button", class: "small link", onclick: (ev) => forget(s, ev.currentTarget) }, "Use the environment's value instead")) : null));
  }

  /** "Check proxies": the saved PROXIES, or the ones typed and not saved yet, through to
   *  BASE_URL (POST /api/proxies/check). Proxies are shown without their credentials. */
  function proxyCheck() {
    const results = el("ul", { class: "check-list small", id: "proxy-check-results", "aria-live": "polite" });
    const button = el("button", { type: "button", class: "small", id: "check-proxies" }, "Check proxies");
    button.addEventListener("click", () => busy(button, async () => {
      const typed = state.edits.has("PROXIES") ? valueOf({ type: "list" }, state.edits.get("PROXIES")) : null;
      if (typed && !typed.length) { toast("Type a proxy first, or discard the edit to check the saved ones.", "warn"); return; }
      const r = await api("POST", "/api/proxies/check", typed ? { proxies: typed, use_cache: false } : { all: true, use_cache: false });
      const list = r.results || [];
      if (!list.length) { clear(results, el("li", {}, "PROXIES is empty: requests go straight to BASE_URL.")); return; }
      clear(results, list.map((x) => el("li", { "data-ok": String(x.ok) },
        el("span", { class: "badge " + (x.ok ? "ok" : "bad") }, x.ok ? "works" : "fails"), " ",
        el("code", {}, (x.entry ? "#" + x.entry + " " : "") + x.proxy), " ",
        el("span", { class: "muted" }, x.ok ? `answered ${x.status} in ${x.latency_ms} ms` : (x.message || ("HTTP " + x.status))))));
      const bad = list.filter((x) => !x.ok).length;
      toast(`${list.length - bad} of ${list.length} prox${list.length === 1 ? "y works" : "ies work"} (checked against ${r.target}).`, bad ? "warn" : "ok");
    }));
    return el("div", { class: "proxy-check" }, button, results);
  }

  function isEmpty(v) {
    return v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0)
      || (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
  }

  /** A masked secret as text: list items, or an object's names with their masked values. */
  function shownSecret(v) {
    if (Array.isArray(v)) return v.join(", ");
    if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => k + ": " + x).join(", ");
    return String(v);
  }

  function updateBar() {
    const n = state.edits.size;
    saveButton.disabled = n === 0;
    discardButton.disabled = n === 0;
    saveButton.textContent = n ? `Save ${n} change${n === 1 ? "" : "s"}` : "Save changes";
    saveInfo.textContent = n ? "Unsaved: " + [...state.edits.keys()].join(", ") : "No unsaved changes.";
  }

  async function save() {
    const body = {};
    state.errors.clear();
    formError.textContent = "";
    for (const [name, raw] of state.edits) {
      const s = state.settings.find((x) => x.name === name);
      try { body[name] = valueOf(s, raw); } catch (message) { state.errors.set(name, message); }
    }
    if (state.errors.size) { render(); focusSetting(state.errors.keys().next().value); toast("Fix the marked settings first.", "bad"); return; }
    await busy(saveButton, async () => {
      try {
        const r = await api("PUT", "/api/config", body);
        const names = Object.keys(body);
        state.edits.clear();
        state.settings = r.settings || state.settings;
        render();
        toast(`Saved and applied: ${names.join(", ")}.`, "ok");
      } catch (e) {
        if (e.status !== 400) throw e;
        // The API names each invalid setting in error.details ({setting, expected}); the message
        // says the same as "NAME: why; NAME: why".
        const details = (e.body && e.body.error && e.body.error.details) || [];
        for (const d of details) if (d && d.setting) state.errors.set(d.setting, "expected " + d.expected);
        if (!state.errors.size) {
          for (const m of e.message.matchAll(/\b([A-Z][A-Z0-9_]+):\s*([^;]*)/g)) if (state.edits.has(m[1])) state.errors.set(m[1], m[2]);
        }
        if (!state.errors.size) formError.textContent = e.message;
        render();
        if (state.errors.size) focusSetting(state.errors.keys().next().value);
        toast("Not saved: " + e.message, "bad");
      }
    });
    updateBar();
  }

  async function forget(s, button) {
    if (!(await confirmAction(`Forget the stored ${s.name}?`, "The value from .env or the environment (or the default) applies again.", "Forget"))) return;
    await busy(button, async () => {
      await api("DELETE", "/api/config/" + encodeURIComponent(s.name));
      state.edits.delete(s.name);
      toast(`${s.name} now comes from the environment.`, "ok");
      await load();
    });
  }

  function focusSetting(name) {
    const row = document.getElementById("row-" + name);
    const input = document.getElementById("set-" + name);
    if (row) row.scrollIntoView({ block: "center" });
    if (input && !input.disabled) input.focus();
  }

  load(location.hash ? decodeURIComponent(location.hash.slice(1)) : null);
})();
