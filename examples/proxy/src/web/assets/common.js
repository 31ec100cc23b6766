// Shared by every admin page: the API client (session cookie + CSRF token), DOM helpers,
// toasts, dialogs, number and time formatting. Exposed as window.GB.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  /** An API error, with the HTTP status and the server's message. */
  class ApiError extends Error {
    constructor(status, message, body) { super(message); this.status = status; this.body = body; }
  }

  /** Calls the admin API. Sends the CSRF token on every state-changing request. */
  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    if (method !== "GET") headers["x-csrf-token"] = csrf;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "The proxy could not be reached.");
    }
    if (res.status === 401) {
      // The session ended (expired, logged out elsewhere, or the proxy restarted).
      location.assign("/login?next=" + encodeURIComponent(location.pathname));
      throw new ApiError(401, "Your session has ended: log in again.");
    }
    const text = await res.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
    if (!res.ok) {
      const message = (data && data.error && data.error.message) || ("HTTP " + res.status);
      throw new ApiError(res.status, message, data);
    }
    return data;
  }

  /** el("div", {class: "x", onclick: f}, child, "text", …): a DOM element. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, value);
    }
    append(node, children);
    return node;
  }
  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function clear(node, ...children) { node.replaceChildren(); return append(node, children); }

  /** A short message in the corner; kind is ok, bad, warn or info. */
  function toast(message, kind = "info", ms = 4500) {
    const box = el("div", { class: "toast " + kind, role: kind === "bad" ? "alert" : "status" }, message);
    document.getElementById("toasts").append(box);
    setTimeout(() => box.remove(), kind === "bad" ? ms * 2 : ms);
    return box;
  }

  /** Opens the page's dialog; resolves with the value of the button pressed ("" if dismissed). */
  function dialog(title, content, buttons) {
    const dlg = document.getElementById("dialog");
    document.getElementById("dialog-title").textContent = title;
    clear(document.getElementById("dialog-content"), content);
    const actions = document.getElementById("dialog-actions");
    clear(actions, (buttons || [{ label: "Close", value: "close", primary: true }]).map((b) =>
      el("button", { value: b.value, class: b.primary ? (b.danger ? "danger solid" : "primary") : "", autofocus: b.primary }, b.label)));
    dlg.returnValue = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => resolve(dlg.returnValue), { once: true });
      dlg.showModal();
    });
  }

  /** Asks before doing something that cannot be undone. */
  async function confirmAction(title, message, label) {
    const answer = await dialog(title, el("p", {}, message), [
      { label: "Cancel", value: "cancel" },
      { label, value: "yes", primary: true, danger: true },
    ]);
    return answer === "yes";
  }

  const nf = new Intl.NumberFormat();
  function num(n) { return n === undefined || n === null ? "–" : nf.format(n); }
  function compact(n) {
    if (n === undefined || n === null) return "–";
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return nf.format(n);
  }
  function pct(rate) { return rate === undefined || rate === null ? "–" : (rate * 100).toFixed(rate >= 0.9995 || rate === 0 ? 0 : 1) + "%"; }
  function time(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }
  function clock(ms) { return ms ? new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "–"; }
  function ago(ms) {
    if (!ms) return "never";
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 0) return "in " + until(ms);
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function until(ms) {
    const s = Math.max(0, Math.round((ms - Date.now()) / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  /** A datetime-local input's value as epoch ms (or undefined). */
  function fromLocalInput(value) { return value ? new Date(value).getTime() : undefined; }

  /** Copies text; falls back to a hidden textarea where the Clipboard API is not allowed. */
  async function copy(text) {
    try { await navigator.clipboard.writeText(text); }
    catch (e) {
      const area = el("textarea", { class: "hidden-copy", "aria-hidden": "true" });
      area.value = text; document.body.append(area); area.select();
      document.execCommand("copy"); area.remove();
    }
    toast("Copied " + text, "ok", 2500);
  }

  /** "?a=1&b=2" from an object, leaving out empty values. */
  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  /** Runs an action with a button disabled and a toast on failure. Callers whose button
   *  depends on state re-render afterwards. */
  async function busy(button, action) {
    if (button) button.disabled = true;
    try { return await action(); }
    catch (e) { toast(e.message, "bad"); return undefined; }
    finally { if (button) button.disabled = false; }
  }

  // Navigation: mark the current page, log out.
  const page = document.body.dataset.page;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
  }
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("POST", "/logout");
    } catch (e) { /* the session is gone either way */ }
    location.assign("/login");
  });

  window.GB = { api, ApiError, el, append, clear, toast, dialog, confirmAction, num, compact, pct, time, clock, ago, until,
    fromLocalInput, copy, query, busy, csrf, root: document.getElementById("page") };
})();
