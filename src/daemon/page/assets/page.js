// exai's live page: calls in flight (server-sent events from /api/events), recent calls, one
// call's record, per-model charts drawn as small SVG, provider queues. No framework, no build.
"use strict";

// The record field that holds a call's cost in millionths of a US dollar (absent: unknown).
const COST_FIELD = "cost_usd_micros";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  live: new Map(), // id -> summary of a call in flight
  clockOffset: 0, // the server's clock minus ours
  window: "hour",
  openRecord: null,
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

async function getJSON(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    signedOut();
    throw new Error("signed out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok && response.status !== 409) throw new Error(body.error || response.statusText);
  return body;
}

// ---------------------------------------------------------------- formatting

function seconds(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 10000) return (ms / 1000).toFixed(2) + " s";
  if (ms < 120000) return Math.round(ms / 1000) + " s";
  const minutes = Math.floor(ms / 60000);
  return minutes + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function count(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

function shortCount(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return Math.round(n / 1e3) + "k";
  return count(n);
}

function when(ms) {
  const ago = Date.now() + state.clockOffset - ms;
  if (ago < 60000) return Math.max(0, Math.round(ago / 1000)) + " s ago";
  if (ago < 3600000) return Math.round(ago / 60000) + " min ago";
  return new Date(ms).toLocaleString();
}

function dollars(micros) {
  const usd = micros / 1e6;
  return "$" + usd.toFixed(usd < 1 ? 4 : 2);
}

function cost(record) {
  const micros = record[COST_FIELD];
  return typeof micros === "number" ? dollars(micros) : "–";
}

function outcomeBadge(word) {
  return el("span", { class: "badge " + word }, word.replace("_", " "));
}

// ---------------------------------------------------------------- connection

function setConnection(word, text) {
  const node = $("#connection");
  node.dataset.state = word;
  node.textContent = text;
}

function signedOut() {
  setConnection("closed", "signed out: run `exai open` again");
}

// ---------------------------------------------------------------- calls in flight

function renderLive() {
  const body = $("#in-flight tbody");
  const rows = [...state.live.values()].sort((a, b) => a.received_at_ms - b.received_at_ms);
  body.replaceChildren(
    ...rows.map((call) => {
      const cancel = el("button", { type: "button", class: "cancel", title: "Stop this call" }, "Cancel");
      cancel.addEventListener("click", (event) => {
        event.stopPropagation();
        cancelCall(call.id, cancel);
      });
      const row = el(
        "tr",
        { "data-call-id": call.id, class: "clickable" },
        el("td", {}, call.tool),
        el("td", {}, call.model || "–"),
        el("td", {}, call.client || "–"),
        el("td", { class: "stage" }, call.stage),
        el("td", { class: "num elapsed", "data-since": call.received_at_ms }, ""),
        el("td", { class: "num tokens" }, count(call.tokens)),
        el("td", { class: "actions" }, cancel),
      );
      row.addEventListener("click", () => openRecord(call.id));
      return row;
    }),
  );
  $("#in-flight-count").textContent = rows.length;
  $("#in-flight-empty").hidden = rows.length > 0;
  tick();
}

function tick() {
  const now = Date.now() + state.clockOffset;
  for (const cell of document.querySelectorAll("#in-flight .elapsed")) {
    cell.textContent = seconds(Math.max(0, now - Number(cell.dataset.since)));
  }
}

async function cancelCall(id, button) {
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    const answer = await getJSON("/api/calls/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
    button.textContent = answer.state || "asked";
  } catch (error) {
    button.textContent = "Failed";
    button.title = error.message;
  }
}

// ---------------------------------------------------------------- events

function listen() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => setConnection("live", "live"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (an ended session) or gone: ask whether we are still signed in.
      getJSON("/api/stats?window=hour").then(() => setTimeout(listen, 2000), () => {});
      setConnection("closed", "disconnected");
    } else {
      setConnection("connecting", "reconnecting…");
    }
  });
  source.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    state.clockOffset = data.now_ms - Date.now();
    state.live = new Map(data.in_flight.map((call) => [call.id, call]));
    renderLive();
    refreshSoon();
  });
  const upsert = (event) => {
    const call = JSON.parse(event.data);
    state.live.set(call.id, call);
    renderLive();
  };
  source.addEventListener("started", (event) => {
    upsert(event);
    refreshSoon();
  });
  source.addEventListener("progress", upsert);
  source.addEventListener("ended", (event) => {
    const ended = JSON.parse(event.data);
    state.live.delete(ended.id);
    renderLive();
    refreshSoon();
    if (state.openRecord === ended.id) openRecord(ended.id);
  });
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    loadRecent();
    loadStats();
  }, 300);
}

// ---------------------------------------------------------------- recent calls

function filters() {
  const form = new FormData($("#filters"));
  const query = new URLSearchParams();
  for (const [name, value] of form.entries()) if (String(value).trim()) query.set(name, String(value).trim());
  query.set("limit", "50");
  return query;
}

function remember(listId, values) {
  const list = $("#" + listId);
  const known = new Set([...list.options].map((o) => o.value));
  for (const value of values) {
    if (value && !known.has(value)) {
      known.add(value);
      list.append(el("option", { value }));
    }
  }
}

async function loadRecent() {
  let answer;
  try {
    answer = await getJSON("/api/calls?" + filters());
  } catch {
    return;
  }
  state.clockOffset = answer.now_ms - Date.now();
  const calls = answer.calls;
  remember("tools", calls.map((c) => c.tool));
  remember("models", calls.map((c) => c.model));
  remember("clients", calls.map((c) => c.client_name));
  $("#recent tbody").replaceChildren(
    ...calls.map((call) => {
      const row = el(
        "tr",
        { "data-call-id": call.id, class: "clickable" },
        el("td", { title: new Date(call.received_at_ms).toLocaleString() }, when(call.received_at_ms)),
        el("td", {}, call.tool),
        // A running call's record learns its model at the end; the live feed knows it now.
        el("td", {}, call.model || state.live.get(call.id)?.model || "–"),
        el("td", {}, call.client_name || "–"),
        el("td", { class: "outcome" }, outcomeBadge(call.state)),
        el("td", { class: "num" }, seconds(call.duration_ms)),
        el("td", { class: "num" }, count(call.tokens_in) + " / " + count(call.tokens_out)),
        el("td", { class: "num" }, cost(call)),
      );
      row.addEventListener("click", () => openRecord(call.id));
      return row;
    }),
  );
  $("#recent-empty").hidden = calls.length > 0;
}

// ---------------------------------------------------------------- one call's record

function answerText(record) {
  if (record.answer !== null && record.answer !== undefined) return record.answer;
  if (record.live) return "(still running)";
  return "(no answer kept)";
}

async function openRecord(id) {
  state.openRecord = id;
  let record;
  try {
    record = await getJSON("/api/calls/" + encodeURIComponent(id));
  } catch (error) {
    $("#record-title").textContent = "Call " + id;
    $("#record-fields").replaceChildren(el("dd", {}, error.message));
    $("#record").hidden = false;
    return;
  }
  const call = record.call;
  $("#record-title").textContent = call.tool + " · " + call.state.replace("_", " ");
  const fields = [
    ["Call", call.id],
    ["Outcome", outcomeBadge(call.state)],
    ["Model", [call.provider, call.model].filter(Boolean).join(" · ") || "–"],
    ["Client", [call.client_name, call.client_version].filter(Boolean).join(" ") + " via " + call.transport],
    ["User", call.user_name || "the owner"],
    ["Received", new Date(call.received_at_ms).toLocaleString()],
    ["Duration", seconds(call.duration_ms)],
    ["First token", seconds(call.time_to_first_token_ms)],
    ["Tokens in/out", count(call.tokens_in) + " / " + count(call.tokens_out) + (call.cached_tokens ? " (" + count(call.cached_tokens) + " cached)" : "")],
    ["Cost", cost(call)],
    ["Delivery", call.delivery],
  ];
  if (call.error_message) fields.push(["Error", (call.error_kind ? call.error_kind + ": " : "") + call.error_message]);
  $("#record-fields").replaceChildren(
    ...fields.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]),
  );
  let args = call.arguments;
  try {
    args = JSON.stringify(JSON.parse(call.arguments), null, 2);
  } catch {
    // Cut to be stored: shown as it is.
  }
  $("#record-arguments").textContent = args;
  $("#record-answer").textContent = answerText(record);
  const stages = record.live ? record.live.stages : [];
  const progress = stages.map((s) => el("li", {}, el("span", { class: "at" }, seconds(s.at_ms)), " ", s.stage));
  if (!record.live) {
    progress.push(el("li", {}, call.progress_count + " progress notifications sent; last: " + (call.last_progress || "–")));
  }
  $("#record-progress").replaceChildren(...progress);
  $("#record-log").textContent = record.log.map(logLine).join("\n") || "(no log lines)";
  $("#record").hidden = false;
}

function logLine(line) {
  try {
    const entry = JSON.parse(line);
    const fields = entry.fields || {};
    const extra = Object.entries(fields)
      .filter(([name]) => name !== "message")
      .map(([name, value]) => name + "=" + value)
      .join(" ");
    return [entry.timestamp, entry.level, fields.message, extra].filter(Boolean).join("  ");
  } catch {
    return line;
  }
}

// ---------------------------------------------------------------- charts

const CHART = { width: 420, row: 22, label: 120, value: 125 };

// Horizontal bars per model: `pairs` gives [light (p95), solid (p50)] values for each model;
// `format(pair, model)` the figure written at the end of its row.
function barChart(target, models, pairs, format) {
  const plot = $(".plot", target);
  if (!models.length) {
    plot.replaceChildren(el("p", { class: "empty" }, "No calls in this window."));
    return;
  }
  const values = models.map(pairs);
  const top = Math.max(1, ...values.flat().filter((v) => typeof v === "number"));
  const height = models.length * CHART.row + 4;
  const chart = svg("svg", { viewBox: `0 0 ${CHART.width} ${height}`, role: "img", class: "bars" });
  const room = CHART.width - CHART.label - CHART.value;
  models.forEach((model, i) => {
    const y = i * CHART.row + 2;
    const label = svg("text", { x: 0, y: y + 14, class: "label" });
    label.textContent = model.model.length > 18 ? model.model.slice(0, 17) + "…" : model.model;
    chart.append(label);
    const [light, solid] = values[i];
    if (typeof light === "number") {
      chart.append(svg("rect", { x: CHART.label, y: y + 2, width: Math.max(1, (light / top) * room), height: 14, class: "light" }));
    }
    if (typeof solid === "number") {
      chart.append(svg("rect", { x: CHART.label, y: y + 5, width: Math.max(1, (solid / top) * room), height: 8, class: "solid" }));
    }
    const value = svg("text", { x: CHART.width, y: y + 14, class: "value", "text-anchor": "end" });
    value.textContent = format(values[i], model);
    chart.append(value);
  });
  plot.replaceChildren(chart);
}

function timeline(target, figures) {
  const plot = $(".plot", target);
  const buckets = figures.buckets;
  const width = CHART.width;
  const height = 110;
  const top = Math.max(1, ...buckets.map((b) => b.calls));
  const slot = width / buckets.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, role: "img", class: "timeline" });
  buckets.forEach((bucket, i) => {
    const x = i * slot + 2;
    const all = (bucket.calls / top) * height;
    const bad = (bucket.errors / top) * height;
    const title = svg("title");
    title.textContent = `${new Date(bucket.start_ms).toLocaleTimeString()}: ${bucket.calls} calls, ${bucket.errors} errors, ${count(bucket.tokens)} tokens`;
    const group = svg("g");
    group.append(title);
    group.append(svg("rect", { x, y: height - all, width: slot - 4, height: all, class: "ok" }));
    if (bad > 0) group.append(svg("rect", { x, y: height - bad, width: slot - 4, height: bad, class: "bad" }));
    chart.append(group);
  });
  const axis = (x, anchor, text) => {
    const label = svg("text", { x, y: height + 13, class: "axis", "text-anchor": anchor });
    label.textContent = text;
    chart.append(label);
  };
  axis(0, "start", state.window === "hour" ? "1 h ago" : "24 h ago");
  axis(width, "end", "now");
  axis(width / 2, "middle", "peak " + top + " calls");
  plot.replaceChildren(chart);
}

async function loadStats() {
  let answer;
  try {
    answer = await getJSON("/api/stats?window=" + state.window);
  } catch {
    return;
  }
  const figures = answer.figures;
  const models = figures.models;
  timeline($("#chart-timeline"), figures);
  const latency = ([p95, p50]) => (p50 === null && p95 === null ? "–" : seconds(p50) + " / " + seconds(p95));
  barChart($("#chart-ttft"), models, (m) => [m.ttft_p95_ms, m.ttft_p50_ms], latency);
  barChart($("#chart-total"), models, (m) => [m.total_p95_ms, m.total_p50_ms], latency);
  barChart($("#chart-errors"), models, (m) => [null, m.error_rate * 100], (_, m) => Math.round(m.error_rate * 100) + " % of " + m.calls);
  barChart($("#chart-tokens"), models, (m) => [m.tokens_out, m.tokens_in], ([out, inp]) => shortCount(inp) + " / " + shortCount(out));
  const calls = models.reduce((n, m) => n + m.calls, 0);
  const tokens = models.reduce((n, m) => n + m.tokens_in + m.tokens_out, 0);
  const spent = typeof answer.spent_today_usd_micros === "number" ? ` · ${dollars(answer.spent_today_usd_micros)} spent today (UTC)` : "";
  $("#summary").textContent = `${answer.in_flight} in flight · ${calls} ${calls === 1 ? "call" : "calls"} and ${shortCount(tokens)} tokens in the last ${state.window}${spent}`;
  renderQueues(answer.queues);
}

function renderQueues(queues) {
  $("#queues tbody").replaceChildren(
    ...queues.map(({ provider, queue }) =>
      el(
        "tr",
        { class: queue.waiting > 0 ? "busy" : "" },
        el("td", {}, provider),
        el("td", { class: "num" }, queue.in_flight),
        el("td", { class: "num" }, queue.limit),
        el("td", { class: "num" }, queue.waiting),
      ),
    ),
  );
  $("#queues-empty").hidden = queues.length > 0;
}

// ---------------------------------------------------------------- start

function start() {
  $("#filters").addEventListener("input", () => loadRecent());
  $("#filters").addEventListener("reset", () => setTimeout(loadRecent, 0));
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#record-close").addEventListener("click", () => {
    state.openRecord = null;
    $("#record").hidden = true;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") $("#record-close").click();
  });
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      for (const other of document.querySelectorAll("[data-window]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      loadStats();
    });
  }
  setInterval(tick, 1000);
  // The charts' "now" moves even when nothing happens.
  setInterval(loadStats, 30000);
  listen();
  loadRecent();
  loadStats();
}

document.addEventListener("DOMContentLoaded", start);
