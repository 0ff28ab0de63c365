// The status page: reads the status API every half interval and draws every group.
// Everything is built with DOM calls and textContent: names, messages and errors come from
// configuration files and DigitalOcean and are never parsed as HTML.
"use strict";

const TOKEN_KEY = "do-scaler-status-token";
const DAY_MS = 24 * 3600 * 1000;
let refreshMs = 5000;
let timer = null;
// What the last pause or resume of each group answered, kept across refreshes (the page is
// redrawn every few seconds; a refusal must stay readable).
const notices = new Map();

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
  return node;
}

// Calls the status API; never throws: { ok, status, body }.
async function api(path, options) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  try {
    const response = await fetch(path, Object.assign({ headers, cache: "no-store" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { ok: response.ok, status: response.status, body };
  } catch (error) {
    return { ok: false, status: 0, body: { error: "do-scaler does not answer (" + error.message + ")" } };
  }
}

function say(text) {
  document.getElementById("message").textContent = text || "";
}

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token in use" : "no token";
}

function fact(label, value, cls) {
  return el("div", { class: "fact" }, el("div", { class: "label" }, label),
    el("div", { class: "value " + (cls || "") }, value));
}

function text(value, or) {
  return value === null || value === undefined || value === "" ? or : String(value);
}

function summaryOf(record) {
  const decision = (record && record.decision) || {};
  if (decision.summary) return decision.summary;
  const steps = decision.steps || [];
  return steps.length ? steps[steps.length - 1].replace(/^decision: /, "") : "no decision yet";
}

function boundsText(bounds, group) {
  const b = bounds || { min: group.min, max: group.max };
  return b.min + ".." + b.max + (b.schedule ? " (schedule " + b.schedule + ")" : "");
}

// A step line of `key` over the day, on the chart's scales.
function stepPath(points, key, x, y, now) {
  let d = "";
  points.forEach((p, i) => {
    const px = x(Date.parse(p.at)), py = y(p[key]);
    d += i === 0 ? "M" + px + "," + py : "H" + px + "V" + py;
  });
  if (points.length) d += "H" + x(now);
  return d;
}

function chart(points, now) {
  const width = 720, height = 180, left = 34, right = 8, top = 8, bottom = 20;
  const start = now - DAY_MS;
  const top_value = Math.max(1, ...points.map((p) => Math.max(p.current, p.desired, p.max)));
  const x = (t) => (left + (Math.max(t, start) - start) / DAY_MS * (width - left - right)).toFixed(1);
  const y = (v) => (top + (1 - v / top_value) * (height - top - bottom)).toFixed(1);
  const root = svg("svg", { class: "chart", viewBox: "0 0 " + width + " " + height, role: "img",
    "aria-label": "size, desired size and bounds over the last 24 hours" });
  root.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  for (let hours = 24; hours >= 0; hours -= 6) {
    const label = svg("text", { x: x(now - hours * 3600 * 1000), y: height - 5, "text-anchor": "middle" });
    label.textContent = hours === 0 ? "now" : "-" + hours + " h";
    root.append(label);
  }
  for (const v of [0, top_value]) {
    const label = svg("text", { x: left - 6, y: Number(y(v)) + 4, "text-anchor": "end" });
    label.textContent = String(v);
    root.append(label);
  }
  if (!points.length) return root;
  for (const [key, cls] of [["max", "bounds"], ["min", "bounds"], ["desired", "desired"], ["current", "current"]]) {
    root.append(svg("path", { class: cls, d: stepPath(points, key, x, y, now) }));
  }
  return root;
}

function dropletTable(droplets, okCount) {
  if (!droplets || !droplets.length) return el("p", { class: "quiet" }, "No droplets.");
  const table = el("table", { class: "droplets" },
    el("tr", null, el("th", null, "id"), el("th", null, "name"), el("th", null, "status"),
      el("th", null, "counts as"), el("th", null, "metrics"), el("th", null, "work"),
      el("th", null, "address")));
  for (const d of droplets) {
    const flags = [d.managed ? null : "not managed", d.protected ? "protected" : null].filter(Boolean);
    table.append(el("tr", { "data-droplet": d.id },
      el("td", { class: "num" }, d.id),
      el("td", null, d.name, flags.length ? el("span", { class: "quiet" }, " (" + flags.join(", ") + ")") : null),
      el("td", null, d.status), el("td", null, d.state),
      el("td", null, d.scrape, d.health ? el("span", { class: "quiet" }, " · health " + d.health) : null),
      el("td", null, text(d.work, "-")), el("td", null, text(d.address, "-"))));
  }
  if (okCount) table.append(el("tr", null, el("td", { colspan: 7, class: "quiet" }, "and " + okCount + " more read fine")));
  return table;
}

function ruleTable(rules) {
  if (!rules || !rules.length) return null;
  const table = el("table", { class: "rules" },
    el("tr", null, el("th", null, "rule"), el("th", null, "value"), el("th", null, "proposes"), el("th", null, "how")));
  for (const r of rules) {
    const value = typeof r.value === "number" ? (Math.round(r.value * 1000) / 1000) : text(r.value, "missing");
    table.append(el("tr", null, el("td", null, r.name), el("td", { class: "num" }, value),
      el("td", { class: "num" }, text(r.proposal, "no proposal")), el("td", null, text(r.verdict, "-"))));
  }
  return table;
}

function decisionList(decisions) {
  const table = el("table", { class: "decisions" },
    el("tr", null, el("th", null, "at"), el("th", null, "size"), el("th", null, "decision")));
  for (const d of decisions) {
    const at = d.decision && d.decision.at ? new Date(d.decision.at).toLocaleTimeString() : "-";
    const steps = (d.decision && d.decision.steps) || [];
    const why = el("details", null, el("summary", null, summaryOf(d)), el("ol", null, ...steps.map((s) => el("li", null, s))));
    table.append(el("tr", null, el("td", null, at), el("td", { class: "num" }, d.current + " → " + d.desired), el("td", null, why)));
  }
  return table;
}

async function setPaused(name, paused) {
  notices.delete(name);
  const verb = paused ? "pause" : "resume";
  const answer = await api("/api/v1/groups/" + encodeURIComponent(name) + "/" + verb, { method: "POST" });
  if (!answer.ok) {
    const reason = answer.body && answer.body.error ? answer.body.error : "HTTP " + answer.status;
    notices.set(name, answer.status === 401
      ? "Refused: to " + verb + " " + name + ", enter the status API token above (" + reason + ")."
      : "Cannot " + verb + " " + name + ": " + reason);
  }
  await refresh();
}

function groupSection(group, sizes, decisions, now) {
  const record = group.last_decision || {};
  const draining = (record.decision && record.decision.draining) || 0;
  const replacing = (record.decision && record.decision.replacing) || 0;
  const notice = el("p", { class: "notice", role: "alert" }, notices.get(group.name) || "");
  const pause = el("button", { type: "button", class: "pause" }, "Pause");
  const resume = el("button", { type: "button", class: "resume" }, "Resume");
  pause.addEventListener("click", () => setPaused(group.name, true));
  resume.addEventListener("click", () => setPaused(group.name, false));
  const badges = [];
  if (group.paused) badges.push(el("span", { class: "badge paused" }, "paused" + (group.pause_reason ? ": " + group.pause_reason : "")));
  if (group.last_error) badges.push(el("span", { class: "badge error" }, "last tick failed"));
  return el("section", { class: "group", id: "group-" + group.name, "data-group": group.name },
    el("div", { class: "group-head" }, el("h2", null, group.name), el("span", { class: "quiet" }, "tag " + group.tag),
      ...badges, group.paused ? resume : pause),
    notice,
    el("div", { class: "facts" },
      fact("size", text(group.current, "-"), "size"),
      draining ? fact("draining", draining, "draining") : null,
      replacing ? fact("being replaced", replacing, "replacing") : null,
      fact("desired", text(group.desired, "-"), "desired"),
      fact("bounds", boundsText(group.bounds, group), "bounds"),
      fact("paused", group.paused ? "yes" : "no", "paused-state"),
      fact("running action", text(group.running_action, "none"), "action")),
    el("p", { class: "why" }, el("strong", null, "Last decision: "), el("span", { class: "last-decision" }, summaryOf(record))),
    group.last_error ? el("p", { class: "notice" }, "Last error: " + group.last_error) : null,
    group.replacement ? el("p", { class: "notice" }, "Replacement: " + group.replacement) : null,
    group.leader ? el("p", {}, "Leader: " + group.leader + (group.leads ? " (this daemon)" : " (this daemon follows)")) : null,
    group.reload_error ? el("p", { class: "notice" }, "Reload refused: " + group.reload_error) : null,
    chart(sizes, now),
    el("p", { class: "legend" }, el("span", { class: "key-current" }, "━ size"), "  ╌ desired  ┈ bounds, over the last 24 hours"),
    ruleTable(record.rules),
    el("details", { open: "" }, el("summary", null, "Droplets"), dropletTable(record.droplets, record.droplets_ok)),
    el("details", null, el("summary", null, "Recent decisions"), decisionList(decisions)));
}

async function refresh() {
  const listing = await api("/api/v1/groups");
  if (!listing.ok) {
    say(listing.status === 401
      ? "This daemon's API needs the status API token to be read: enter it above."
      : (listing.body && listing.body.error) || "do-scaler answered HTTP " + listing.status);
    return;
  }
  say("");
  const groups = listing.body.groups || [];
  const intervals = groups.map((g) => g.interval_seconds).filter((s) => s > 0);
  refreshMs = Math.min(10000, Math.max(1000, (intervals.length ? Math.min(...intervals) : 10) * 500));
  document.getElementById("every").textContent = (refreshMs / 1000) + " s";
  const now = Date.now();
  const sections = await Promise.all(groups.map(async (group) => {
    const name = encodeURIComponent(group.name);
    const [sizes, decisions] = await Promise.all([
      api("/api/v1/groups/" + name + "/sizes"),
      api("/api/v1/groups/" + name + "/decisions?limit=10"),
    ]);
    return groupSection(group, sizes.ok ? sizes.body.points : [], decisions.ok ? decisions.body.decisions : [], now);
  }));
  const main = document.getElementById("groups");
  // Keep open the details the reader opened.
  const open = new Set([...main.querySelectorAll("details[open]")].map((d) => d.closest("section").id + d.querySelector("summary").textContent));
  main.replaceChildren(...(sections.length ? sections : [el("p", { class: "quiet" }, "No groups: add a file to conf.d/.")]));
  for (const d of main.querySelectorAll("details")) {
    const key = d.closest("section").id + d.querySelector("summary").textContent;
    if (open.has(key)) d.setAttribute("open", "");
  }
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}

async function loop() {
  await refresh();
  timer = setTimeout(loop, refreshMs);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  showTokenState();
  clearTimeout(timer);
  loop();
});
document.getElementById("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
  clearTimeout(timer);
  loop();
});
showTokenState();
loop();
