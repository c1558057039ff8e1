// The vidflow console: a client of the public /v1 API like any other. The
// API key lives in this tab's sessionStorage and goes out in the
// Authorization header; the cookie set at sign-in exists only for <video>
// and <img> elements, which cannot send headers. Everything a user or the
// server wrote is put on the page as text (textContent), never as HTML.
"use strict";

const state = { key: sessionStorage.getItem("vidflow_key") || "", streams: new Map() };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, opts) {
  const o = Object.assign({ headers: {} }, opts || {});
  o.headers = Object.assign({ Authorization: "Bearer " + state.key }, o.headers);
  const r = await fetch(path, o);
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: { message: text } }; }
  if (!r.ok) {
    const err = (body && body.error) || {};
    const e = new Error((err.param ? err.param + ": " : "") + (err.message || r.statusText));
    e.status = r.status;
    throw e;
  }
  return body;
}

function untrainedNote(v) {
  if (!v.untrained) return null;
  return el("span", { class: "untrained", "data-untrained": "1" },
    "Untrained model output: made by seeded random weights, so the picture is structured noise, not your prompt.");
}

function badge(status) {
  return el("span", { class: "badge " + status, "data-status": status }, status.replace("_", " "));
}

function eta(v) {
  if (v.eta_s === null || v.eta_s === undefined) return "";
  return Math.max(0, Math.round(v.eta_s)) + " s";
}

// ---- pages -----------------------------------------------------------

function show(page) {
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-" + page;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.id === "nav-" + page);
}

async function route() {
  const hash = location.hash || "#/jobs";
  $("nav").hidden = !state.key;
  if (!state.key) { show("signin"); return; }
  const [, page, arg] = hash.split("/");
  stopStreams();
  try {
    if (page === "new") show("new");
    else if (page === "gallery") { show("gallery"); await renderGallery(); }
    else if (page === "usage") { show("usage"); await renderUsage(); }
    else if (page === "job" && arg) { show("job"); await renderJob(decodeURIComponent(arg)); }
    else { show("jobs"); await renderJobs(); }
  } catch (e) {
    if (e.status === 401) { signOut(); return; }
    throw e;
  }
}

// ---- sign in / out -----------------------------------------------------

async function signIn(ev) {
  ev.preventDefault();
  $("signin-error").textContent = "";
  const key = $("signin-key").value.trim();
  try {
    const r = await fetch("/console/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    state.key = key;
    sessionStorage.setItem("vidflow_key", key);
    sessionStorage.setItem("vidflow_tenant", body.tenant);
    $("signin-key").value = "";
    $("who").textContent = "tenant " + body.tenant;
    location.hash = "#/new";
    await route();
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
}

function signOut() {
  stopStreams();
  // Nothing of this tenant stays in the page for whoever signs in next.
  for (const id of ["jobs-body", "gallery", "job-view", "chart-spend", "chart-seconds", "usage-body", "usage-total", "who"]) {
    $(id).replaceChildren();
  }
  state.key = "";
  sessionStorage.removeItem("vidflow_key");
  sessionStorage.removeItem("vidflow_tenant");
  fetch("/console/session", { method: "DELETE" });
  location.hash = "#/signin";
  route();
}

// ---- new video ---------------------------------------------------------

async function submit(ev) {
  ev.preventDefault();
  $("new-error").textContent = "";
  const fields = {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    model: $("model").value.trim(),
    size: $("size").value.trim(),
    seconds: $("seconds").value.trim(),
    tier: $("tier").value,
    mode: $("mode").value,
    steps: $("steps").value.trim(),
  };
  const file = $("first-frame").files[0];
  let opts;
  if (file) {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) if (v !== "") form.append(k, v);
    form.append("input_reference", file, file.name);
    opts = { method: "POST", body: form };
  } else {
    const body = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v === "") continue;
      body[k] = k === "steps" ? Number(v) : v;
    }
    opts = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  $("submit").disabled = true;
  try {
    const v = await api("/v1/videos", opts);
    sessionStorage.setItem("vidflow_last", v.id);
    location.hash = "#/jobs";
  } catch (e) {
    $("new-error").textContent = e.message;
  } finally {
    $("submit").disabled = false;
  }
}

// ---- jobs with live progress ------------------------------------------------

function jobRow(v) {
  const bar = el("progress", { max: 100, value: v.progress, "data-job-id": v.id, class: "job-progress" });
  const cancel = el("button", { type: "button", class: "secondary", textContent: "Cancel" });
  cancel.hidden = v.status !== "queued" && v.status !== "in_progress";
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { await api("/v1/videos/" + encodeURIComponent(v.id) + "/cancel", { method: "POST" }); } catch (_) { /* finished meanwhile */ }
  });
  const tr = el("tr", { "data-job-id": v.id },
    el("td", {}, el("a", { href: "#/job/" + encodeURIComponent(v.id) }, v.id)),
    el("td", { class: "prompt", title: v.prompt || "" }, v.prompt || ""),
    el("td", { class: "status" }, badge(v.status)),
    el("td", {}, bar, " ", el("span", { class: "pct" }, v.progress + "%")),
    el("td", { class: "stage" }, v.stage),
    el("td", { class: "eta" }, eta(v)),
    el("td", {}, cancel));
  return tr;
}

function updateRow(tr, v) {
  tr.querySelector("progress").value = v.progress;
  tr.querySelector(".pct").textContent = v.progress + "%";
  tr.querySelector(".status").replaceChildren(badge(v.status));
  tr.querySelector(".stage").textContent = v.stage + (v.error ? " (" + v.error.message + ")" : "");
  tr.querySelector(".eta").textContent = eta(v);
  if (v.status !== "queued" && v.status !== "in_progress") tr.querySelector("button").hidden = true;
}

async function renderJobs() {
  const list = await api("/v1/videos?limit=50");
  const body = $("jobs-body");
  body.replaceChildren();
  $("jobs-empty").hidden = list.data.length > 0;
  for (const v of list.data) {
    const tr = jobRow(v);
    body.append(tr);
    if (v.status === "queued" || v.status === "in_progress") follow(v.id, (nv) => updateRow(tr, nv));
  }
}

// Server-sent events through fetch (EventSource cannot send the key).
function follow(id, onVideo) {
  const ctrl = new AbortController();
  state.streams.set(id, ctrl);
  (async () => {
    const r = await fetch("/v1/videos/" + encodeURIComponent(id) + "/events", {
      headers: { Authorization: "Bearer " + state.key, Accept: "text/event-stream" },
      signal: ctrl.signal,
    });
    if (!r.ok || !r.body) return;
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        try { onVideo(JSON.parse(data)); } catch (_) { /* a keep-alive or a partial line */ }
      }
    }
  })().catch(() => {}).finally(() => state.streams.delete(id));
}

function stopStreams() {
  for (const c of state.streams.values()) c.abort();
  state.streams.clear();
}

// ---- gallery and details -------------------------------------------------

function player(v) {
  const src = "/v1/videos/" + encodeURIComponent(v.id) + "/content";
  return el("video", {
    controls: true, preload: "metadata", src, poster: src + "?variant=thumbnail",
    "data-job-id": v.id, "data-seconds": v.seconds, loop: true, muted: true,
  });
}

async function renderGallery() {
  const list = await api("/v1/videos?limit=100");
  const g = $("gallery");
  g.replaceChildren();
  const done = list.data.filter((v) => v.status === "completed" && !v.content_deleted);
  $("gallery-empty").hidden = done.length > 0;
  for (const v of done) {
    g.append(el("div", { class: "card", "data-job-id": v.id },
      player(v),
      untrainedNote(v),
      el("p", {}, el("a", { href: "#/job/" + encodeURIComponent(v.id) }, v.prompt || v.id)),
      el("p", {}, v.size + " · " + v.seconds + " s · " + (v.model || "") + (v.cost ? " · $" + v.cost.amount_usd : ""))));
  }
}

async function renderJob(id) {
  const v = await api("/v1/videos/" + encodeURIComponent(id) + "?include=details");
  $("job-title").textContent = "Video " + v.id;
  const facts = el("dl", { class: "facts" });
  const add = (k, val) => { if (val !== null && val !== undefined && val !== "") facts.append(el("dt", {}, k), el("dd", {}, val)); };
  add("Status", v.status + (v.error ? ": " + v.error.message : ""));
  add("Prompt", v.prompt);
  add("Model", v.model);
  add("Size", v.size);
  add("Seconds", v.seconds);
  add("Tier / mode", (v.tier || "") + " / " + (v.mode || ""));
  add("Seed / steps", v.seed + " / " + v.steps);
  add("Created", new Date(v.created_at * 1000).toISOString());
  if (v.completed_at) add("Completed", new Date(v.completed_at * 1000).toISOString());
  if (v.cost) add("Cost", "$" + v.cost.amount_usd + " for " + v.cost.billed_seconds + " s (prices " + v.cost.price_version + ")");
  const d = v.details;
  if (d) {
    add("Timings", "queue " + d.queue_wait_s.toFixed(2) + " s, encode " + d.encode_s.toFixed(2) +
      " s, denoise " + d.denoise_s.toFixed(2) + " s, decode " + d.decode_s.toFixed(2) + " s, output " + d.output_s.toFixed(2) + " s");
    for (const s of d.safety) add("Safety (" + s.stage + ")", s.decision + (s.category ? " " + s.category : "") + (s.reason ? ": " + s.reason : "") + " [" + s.policy_version + "]");
  }
  if (v.sha256) add("SHA-256", v.sha256);
  const view = $("job-view");
  view.replaceChildren(facts);
  if (v.status === "completed" && !v.content_deleted) view.prepend(player(v), untrainedNote(v) || "");
  if (v.status === "queued" || v.status === "in_progress") follow(v.id, (nv) => { if (nv.status !== v.status) renderJob(id); });
}

// ---- usage charts ------------------------------------------------------

const TIER_COLOURS = { premium: "#7c3aed", standard: "#2563eb", free: "#10b981" };

function chart(container, rows, valueOf, label) {
  const dates = [...new Set(rows.map((r) => r.date))].sort();
  const tiers = Object.keys(TIER_COLOURS);
  const totals = dates.map((d) => rows.filter((r) => r.date === d).reduce((s, r) => s + valueOf(r), 0));
  const max = Math.max(1e-9, ...totals);
  const W = 720, H = 220, pad = 40, bw = Math.max(6, Math.min(40, (W - pad * 2) / Math.max(1, dates.length) - 6));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  mk("line", { x1: pad, y1: H - pad, x2: W - 10, y2: H - pad, stroke: "#9ca3af" });
  mk("text", { x: 4, y: 14, "font-size": 11, fill: "#374151" }).textContent = label + " (max " + max.toFixed(max < 10 ? 3 : 0) + ")";
  dates.forEach((d, i) => {
    let y = H - pad;
    const x = pad + i * (bw + 6);
    for (const t of tiers) {
      const v = rows.filter((r) => r.date === d && r.tier === t).reduce((s, r) => s + valueOf(r), 0);
      if (v <= 0) continue;
      const h = (H - pad * 2) * v / max;
      y -= h;
      const rect = mk("rect", { x, y, width: bw, height: h, fill: TIER_COLOURS[t], "data-tier": t, "data-date": d });
      const title = document.createElementNS(ns, "title");
      title.textContent = d + " " + t + ": " + v;
      rect.append(title);
    }
    mk("text", { x, y: H - pad + 14, "font-size": 10, fill: "#374151" }).textContent = d.slice(5);
  });
  const legend = el("div", { class: "legend" }, ...tiers.map((t) => {
    const i = el("i"); i.style.background = TIER_COLOURS[t];
    return el("span", {}, i, t);
  }));
  container.replaceChildren(svg, legend);
}

async function renderUsage() {
  const u = await api("/v1/usage?days=30");
  chart($("chart-spend"), u.data, (r) => r.amount_micro / 1e6, "USD per day");
  chart($("chart-seconds"), u.data, (r) => r.video_seconds, "video seconds per day");
  const body = $("usage-body");
  body.replaceChildren(...u.data.map((r) => el("tr", {},
    el("td", {}, r.date), el("td", {}, r.tier), el("td", {}, r.jobs),
    el("td", {}, r.video_seconds.toFixed(3)), el("td", {}, r.amount_usd))));
  $("usage-total").textContent = "Total: $" + u.total_usd + " for " + u.total_video_seconds.toFixed(3) + " s of video";
}

// ---- start --------------------------------------------------------------

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("new-form").addEventListener("submit", submit);
  $("sign-out").addEventListener("click", signOut);
  const t = sessionStorage.getItem("vidflow_tenant");
  if (t) $("who").textContent = "tenant " + t;
  route();
});
