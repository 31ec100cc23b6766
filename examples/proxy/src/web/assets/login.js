// The login page: POST /login with the token as JSON, then on to the page asked for.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");
  const next = new URLSearchParams(location.search).get("next");
  // Only our own pages: never an absolute URL from the query string.
  const safeNext = next && /^\/(keys|models|dashboard|logs|config)$/.test(next) ? next : null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!input.value) {
      error.textContent = "Enter the admin token.";
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Logging in…";
    try {
      const res = await fetch("/login", {
        method: "POST",
        headers: { "content-type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ token: input.value }),
      });
      const body = await res.json().catch(() => ({}));
      if (res.ok) {
        location.assign(safeNext || body.next || "/keys");
        return;
      }
      error.textContent = (body.error && body.error.message) || "Login failed (" + res.status + ").";
      input.select();
    } catch (e) {
      error.textContent = "The proxy could not be reached.";
    } finally {
      button.disabled = false;
      button.textContent = "Log in";
    }
  });
})();
