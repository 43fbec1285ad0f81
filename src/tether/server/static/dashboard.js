// Tether dashboard. Everything shown comes from the REST API with the operator's token.
// No inline script or style: the page runs under a strict Content-Security-Policy.
// Text from the host is always set with textContent; only widget HTML (sanitised by the
// host with nh3) goes through innerHTML, and the CSP stops any script in it from running.
"use strict";

(() => {
  const TOKEN_KEY = "tether.token";
  const POLL_MS = 2000;
  const MAX_EVENTS = 150;

  const $ = (id) => document.getElementById(id);
  const state = {
    timer: null,
    busy: false,
    again: false,
    eventsAfter: 0,
    events: [],
    seen: {},       // section -> JSON of the data last drawn, to skip redraws
    widgetHtml: {}, // widget id -> html last inserted
  };

  // ---- token ------------------------------------------------------------------------
  function tokenFromFragment() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!m) return null;
    history.replaceState(null, "", location.pathname + location.search); // out of the URL bar
    try { return decodeURIComponent(m[1]); } catch (_e) { return null; }
  }
  const getToken = () => sessionStorage.getItem(TOKEN_KEY);

  function showLogin(message) {
    stopPolling();
    sessionStorage.removeItem(TOKEN_KEY);
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    setStatus("not connected", true);
    $("token-input").focus();
  }

  function showMain() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
  }

  // ---- API --------------------------------------------------------------------------
  class AuthError extends Error {}

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Authorization: "Bearer " + getToken(), Accept: "application/json" }, opts.headers);
    const res = await fetch(path, opts);
    let body = null;
    try { body = await res.json(); } catch (_e) { body = null; }
    if (res.status === 401) throw new AuthError((body && body.detail) || "the token was refused");
    if (!res.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : res.statusText;
      throw new Error(res.status + ": " + detail);
    }
    return body;
  }

  // A list from a response that is either a list or an object holding one.
  function listOf(body, key) {
    if (Array.isArray(body)) return body;
    if (body && Array.isArray(body[key])) return body[key];
    if (body && typeof body === "object") {
      const first = Object.values(body).find(Array.isArray);
      if (first) return first;
    }
    return [];
  }

  // ---- DOM helpers --------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fillTable(id, rows, emptyText, columns) {
    const tbody = $(id).tBodies[0];
    if (!rows.length) {
      tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText)));
      return;
    }
    tbody.replaceChildren(...rows);
  }

  function changed(section, data) {
    const json = JSON.stringify(data);
    if (state.seen[section] === json) return false;
    state.seen[section] = json;
    return true;
  }

  function setStatus(text, bad) {
    const s = $("status");
    s.className = "status" + (bad ? " bad" : "");
    s.replaceChildren(el("span", { class: "dot" }), text);
  }

  // ---- time -------------------------------------------------------------------------
  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }
  function span(seconds) {
    const s = Math.round(Math.abs(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function relative(v) {
    const d = toDate(v);
    if (!d) return "—";
    const secs = (d.getTime() - Date.now()) / 1000;
    return Math.abs(secs) < 1 ? "now" : secs > 0 ? "in " + span(secs) : span(secs) + " ago";
  }
  function clock(v) {
    const d = toDate(v);
    return d ? d.toLocaleTimeString([], { hour12: false }) : "—";
  }
  function timeCell(v) {
    const d = toDate(v);
    return el("td", { class: "nowrap", title: d ? d.toISOString() : null }, relative(v));
  }

  // ---- sections -----------------------------------------------------------------------
  function drawPlugins(plugins) {
    const active = plugins.filter((p) => p.state === "active").length;
    const errors = plugins.filter((p) => p.state === "error" || p.error).length;
    $("count-active").textContent = active;
    $("count-plugins").textContent = plugins.length;
    $("count-errors").textContent = errors;
    $("count-errors").parentElement.classList.toggle("alert", errors > 0);
    if (!changed("plugins", plugins)) return;
    const rows = plugins.map((p) => {
      const caps = el("div", { class: "caps" },
        (p.granted || []).map((c) => el("span", { class: "cap", title: "granted" }, c)),
        (p.denied || []).map((c) => el("span", { class: "cap denied", title: "asked for, not granted" }, c)));
      const registered = [];
      for (const kind of ["tools", "commands", "hooks", "skills"]) {
        const n = (p[kind] || []).length;
        if (n) registered.push(n + " " + (n === 1 ? kind.replace(/s$/, "") : kind));
      }
      const errorCell = el("td", {},
        p.error ? el("div", { class: "error-text" }, (p.reason ? p.reason + ": " : "") + p.error) : el("span", { class: "muted" }, "—"),
        (p.warnings || []).map((w) => el("div", { class: "warn-text" }, "⚠ " + w)));
      const canEnable = p.state === "disabled" || p.state === "error" || p.state === "unloaded";
      const actions = el("div", { class: "actions" },
        el("button", { type: "button", class: "danger", dataset: { action: "disable", plugin: p.id }, disabled: p.state !== "active" }, "Disable"),
        el("button", { type: "button", dataset: { action: "enable", plugin: p.id }, disabled: !canEnable }, "Enable"),
        el("button", { type: "button", dataset: { action: "reload", plugin: p.id }, disabled: p.source === "code" }, "Reload"));
      return el("tr", { dataset: { plugin: p.id, state: p.state } },
        el("td", {}, el("div", { class: "pname" }, p.name || p.id), el("div", { class: "pid" }, p.id + (p.version ? " · v" + p.version : ""))),
        el("td", {}, el("span", { class: "badge state " + p.state }, p.state)),
        el("td", {}, el("span", { class: "badge info" }, p.tier || "—")),
        el("td", {}, caps),
        el("td", { class: "muted" }, registered.join(", ") || "—"),
        errorCell,
        el("td", { class: "actions-col" }, actions));
    });
    fillTable("plugins", rows, "No plugins found.", 7);
  }

  function drawTools(tools) {
    $("count-tools").textContent = tools.length;
    $("tools-count").textContent = tools.length;
    if (!changed("tools", tools)) return;
    const rows = tools.map((t) => el("tr", { dataset: { tool: t.name } },
      el("td", { class: "mono" }, t.name),
      el("td", {}, t.plugin || t.plugin_id || "—"),
      el("td", { class: "muted" }, (t.description || "").split("\n")[0])));
    fillTable("tools", rows, "No tools registered.", 3);
  }

  function drawJobs(jobs) {
    $("count-jobs").textContent = jobs.length;
    $("jobs-count").textContent = jobs.length;
    const rows = jobs.map((j) => el("tr", {},
      el("td", {}, el("div", { class: "mono" }, j.name), el("div", { class: "pid" }, j.plugin || "")),
      el("td", { class: "mono" }, j.kind === "cron" ? j.spec : (j.kind || "") + " " + j.spec + "s"),
      timeCell(j.last_run),
      j.running ? el("td", {}, el("span", { class: "badge warn" }, "running")) : timeCell(j.next_run),
      el("td", { class: "nowrap" }, String(j.run_count ?? 0), j.failure_count ? el("span", { class: "badge bad" }, j.failure_count + " failed") : null),
      el("td", {}, j.last_error ? el("span", { class: "error-text" }, j.last_error) : "—")));
    fillTable("jobs", rows, "No scheduled jobs.", 6); // redrawn each time: relative times move
  }

  function kindClass(kind) {
    if (/violation|refused|fail|error|stuck|blocked/.test(kind)) return "bad";
    if (kind === "state") return "info";
    return "";
  }

  function drawAudit(records) {
    if (!changed("audit", records)) return;
    const rows = records.map((r) => el("tr", {},
      el("td", { class: "nowrap", title: toDate(r.ts) ? toDate(r.ts).toISOString() : null }, clock(r.ts)),
      el("td", {}, r.plugin),
      el("td", {}, el("span", { class: "badge " + kindClass(r.kind) }, r.kind)),
      el("td", {}, r.message)));
    fillTable("audit", rows, "Nothing audited yet.", 4);
  }

  function drawEvents(body, fresh) {
    const items = listOf(body, "events");
    if (typeof body.last === "number") state.eventsAfter = body.last;
    if (!items.length && state.events.length && !fresh) return;
    state.events = items.slice().reverse().concat(state.events).slice(0, MAX_EVENTS);
    const newSeqs = new Set(items.map((e) => e.seq));
    const rows = state.events.map((e) => el("tr", { class: newSeqs.has(e.seq) && !fresh ? "fresh" : null },
      el("td", { class: "nowrap" }, clock(e.ts)),
      el("td", { class: "mono" }, e.name),
      el("td", {}, e.source),
      el("td", { class: "data" }, e.data === "{}" ? "" : e.data)));
    fillTable("events", rows, "No events yet.", 4);
  }

  function drawWidgets(body) {
    const widgets = listOf(body, "widgets");
    const box = $("widgets");
    if (!widgets.length) {
      if (box.dataset.empty !== "1") {
        box.replaceChildren(el("p", { class: "muted" }, "No plugin has registered a widget."));
        box.dataset.empty = "1";
        state.widgetHtml = {};
      }
      return;
    }
    box.dataset.empty = "0";
    const wanted = new Set(widgets.map((w) => w.id));
    for (const node of Array.from(box.children)) {
      if (!node.dataset.widget || !wanted.has(node.dataset.widget)) {
        delete state.widgetHtml[node.dataset.widget];
        node.remove();
      }
    }
    widgets.forEach((w, i) => {
      let card = Array.from(box.children).find((n) => n.dataset.widget === w.id);
      if (!card) {
        card = el("article", { class: "widget", dataset: { widget: w.id } },
          el("div", { class: "widget-head" }, el("span", {}, w.label), el("span", { class: "pid" }, w.plugin)),
          el("div", { class: "widget-body" }));
      }
      if (box.children[i] !== card) box.insertBefore(card, box.children[i] || null);
      const bodyNode = card.querySelector(".widget-body");
      const key = w.error ? "error:" + w.error : "html:" + w.html;
      if (state.widgetHtml[w.id] === key) return;
      state.widgetHtml[w.id] = key;
      card.classList.toggle("failed", Boolean(w.error));
      if (w.error) {
        bodyNode.textContent = w.error;
      } else {
        // Sanitised by the host (nh3); the page's CSP blocks inline script and handlers.
        bodyNode.innerHTML = w.html;
      }
    });
  }

  // ---- refresh loop -------------------------------------------------------------------
  async function refresh() {
    if (!getToken()) return;
    if (state.busy) { state.again = true; return; } // once this one ends, go again
    state.busy = true;
    const fresh = state.eventsAfter === 0 && !state.events.length;
    try {
      const [plugins, tools, jobs, audit, events, widgets] = await Promise.allSettled([
        api("/api/plugins"),
        api("/api/tools"),
        api("/api/jobs"),
        api("/api/audit?limit=60"),
        api("/api/dashboard/events?after=" + state.eventsAfter),
        api("/api/dashboard/widgets"),
      ]);
      const all = [plugins, tools, jobs, audit, events, widgets];
      const auth = all.find((r) => r.status === "rejected" && r.reason instanceof AuthError);
      if (auth) { showLogin("The token was refused: " + auth.reason.message); return; }
      showMain();
      if (plugins.status === "fulfilled") drawPlugins(listOf(plugins.value, "plugins"));
      if (tools.status === "fulfilled") drawTools(listOf(tools.value, "tools"));
      if (jobs.status === "fulfilled") drawJobs(listOf(jobs.value, "jobs"));
      if (audit.status === "fulfilled") drawAudit(listOf(audit.value, "records"));
      if (events.status === "fulfilled") drawEvents(events.value, fresh);
      if (widgets.status === "fulfilled") drawWidgets(widgets.value);
      const failed = all.filter((r) => r.status === "rejected");
      if (failed.length) setStatus("partly updated " + clock(Date.now() / 1000) + " — " + failed[0].reason.message, true);
      else setStatus("live · updated " + clock(Date.now() / 1000), false);
    } catch (e) {
      setStatus("cannot reach the host: " + e.message, true);
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; setTimeout(refresh, 0); }
    }
  }

  function startPolling() {
    stopPolling();
    const tick = async () => {
      await refresh();
      if (getToken()) state.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }
  function stopPolling() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  async function onAction(button) {
    const { action, plugin } = button.dataset;
    const row = button.closest("tr");
    row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    setStatus(action + " " + plugin + "…", false);
    try {
      await api("/api/plugins/" + encodeURIComponent(plugin) + "/" + action, { method: "POST" });
      setStatus(plugin + ": " + action + "d", false);
    } catch (e) {
      if (e instanceof AuthError) { showLogin(e.message); return; }
      setStatus(plugin + ": " + action + " failed — " + e.message, true);
    }
    state.seen.plugins = null; // redraw buttons even if nothing else changed
    await refresh();
  }

  // ---- wiring -------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      startPolling();
    });
    $("signout").addEventListener("click", () => showLogin(""));
    $("plugins").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (button && !button.disabled) onAction(button);
    });
    const fromFragment = tokenFromFragment();
    if (fromFragment) sessionStorage.setItem(TOKEN_KEY, fromFragment);
    if (getToken()) startPolling(); else showLogin("");
  });
})();
