// Fleet dashboard: device table and per-device plots, from the server's JSON APIs.
// Plain script, no build step. The operator token lives in sessionStorage (this tab only) and goes
// out as `Authorization: Bearer`; every value from the server reaches the page through textContent.
"use strict";

(function () {
  const TOKEN_KEY = "edge-fleet.operator-token";
  const REFRESH_MS = 10000;
  const MAX_ROWS = 500; // more rows than this are filtered, not rendered (10 000 devices stay fast)
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const MEMORY_SERIES = [
    { key: "rss_mb", label: "process RSS", stroke: "#d62728", scale: "mb" },
    { key: "nvmap_mb", label: "NvMap", stroke: "#9467bd", scale: "mb" },
    { key: "mem_available_mb", label: "system available", stroke: "#2ca02c", scale: "avail" },
  ];

  const state = { devices: [], selected: null, timer: null, historyRequest: 0, charts: {} };
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: "Bearer " + token, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "the server cannot be reached (" + err.message + ")");
    }
    if (!response.ok) {
      let detail = response.statusText || "HTTP " + response.status;
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") detail = body.error;
      } catch (_) {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, detail);
    }
    return response.json();
  }

  // ---- messages and token ---------------------------------------------------------------------

  function showMessage(text) {
    const box = $("message");
    box.textContent = text;
    box.hidden = !text;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showTokenForm() {
    $("main").hidden = true;
    $("sign-out").hidden = true;
    $("token-form").hidden = false;
    $("token-input").value = "";
    $("token-input").focus();
    setStatus("");
  }

  function handleError(err) {
    if (err instanceof ApiError && err.status === 401) {
      stopRefresh();
      sessionStorage.removeItem(TOKEN_KEY);
      showMessage("The server refused the operator token (401 Unauthorized: " + err.message +
        "). Enter a valid operator token.");
      showTokenForm();
    } else if (err instanceof ApiError && err.status === 403) {
      stopRefresh();
      showMessage("This token may not read the fleet (403 Forbidden: " + err.message + ").");
      showTokenForm();
    } else if (err instanceof ApiError) {
      showMessage("Could not load data" + (err.status ? " (HTTP " + err.status + ")" : "") + ": " + err.message);
    } else {
      showMessage("Dashboard error: " + err.message);
    }
  }

  function start() {
    $("token-form").hidden = true;
    $("main").hidden = false;
    $("sign-out").hidden = false;
    showMessage("");
    refresh();
    stopRefresh();
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  function stopRefresh() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
  }

  // ---- formatting -----------------------------------------------------------------------------

  function toSeconds(value) {
    if (typeof value === "number") return value;
    if (typeof value === "string") {
      const ms = Date.parse(value);
      return Number.isNaN(ms) ? null : ms / 1000;
    }
    return null;
  }

  function ago(seconds) {
    if (seconds === null) return "never";
    const delta = Math.max(0, Date.now() / 1000 - seconds);
    if (delta < 90) return Math.round(delta) + " s ago";
    if (delta < 5400) return Math.round(delta / 60) + " min ago";
    if (delta < 172800) return Math.round(delta / 3600) + " h ago";
    return Math.round(delta / 86400) + " d ago";
  }

  function num(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  // ---- device table ---------------------------------------------------------------------------

  async function refresh() {
    try {
      const devices = await api("/api/v1/devices");
      state.devices = Array.isArray(devices) ? devices : [];
      renderDevices();
      const rollouts = await api("/api/v1/rollouts");
      renderRollouts(Array.isArray(rollouts) ? rollouts : []);
      setStatus("Updated " + new Date().toLocaleTimeString());
      showMessage("");
      if (state.selected !== null) await loadHistory();
      document.body.dataset.state = "ready";
    } catch (err) {
      handleError(err);
    }
  }

  function matches(device, needle) {
    if (!needle) return true;
    if (String(device.device_id).toLowerCase().includes(needle)) return true;
    return (device.models || []).some((m) => String(m.name).toLowerCase().includes(needle));
  }

  function renderDevices() {
    const needle = $("filter").value.trim().toLowerCase();
    const shown = state.devices.filter((d) => matches(d, needle));
    const online = state.devices.filter((d) => d.online).length;
    $("device-count").textContent = "(" + state.devices.length + ", " + online + " online)";
    const body = document.querySelector("#devices tbody");
    const rows = shown.slice(0, MAX_ROWS).map(deviceRow);
    body.replaceChildren(...rows);
    const note = $("truncated");
    note.hidden = shown.length <= MAX_ROWS;
    note.textContent = "Showing " + MAX_ROWS + " of " + shown.length + " devices: filter to narrow.";
  }

  function deviceRow(device) {
    const row = el("tr");
    row.dataset.deviceId = device.device_id;
    if (device.device_id === state.selected) row.classList.add("selected");
    row.append(el("td", device.device_id));
    const stateCell = el("td");
    stateCell.append(el("span", device.online ? "online" : "offline", "badge " + (device.online ? "online" : "offline")));
    row.append(stateCell);
    const seen = toSeconds(device.last_seen);
    const seenCell = el("td", ago(seen));
    if (seen !== null) seenCell.title = new Date(seen * 1000).toISOString();
    row.append(seenCell);
    const models = device.models || [];
    row.append(listCell(models.map((m) => m.name + " v" + m.version + " (" + m.backend + ")")));
    row.append(listCell(models.map((m) => num(m.p50_ms, 2) + " / " + num(m.p99_ms, 2))));
    row.append(el("td", num(device.rss_mb, 1), "num"));
    row.append(el("td", num(device.nvmap_mb, 1), "num"));
    row.append(el("td", num(device.mem_available_mb, 0), "num"));
    row.append(el("td", device.dropped === undefined ? "–" : device.dropped, "num"));
    row.addEventListener("click", () => select(device.device_id));
    return row;
  }

  // ---- rollouts -------------------------------------------------------------------------------

  function renderRollouts(rollouts) {
    const paused = rollouts.filter((r) => r.state === "paused").length;
    $("rollout-count").textContent = "(" + rollouts.length + ", " + paused + " paused)";
    const body = document.querySelector("#rollouts tbody");
    body.replaceChildren(...rollouts.slice(0, MAX_ROWS).map(rolloutRow));
  }

  function rolloutRow(rollout) {
    const row = el("tr");
    row.dataset.rolloutId = rollout.id;
    row.append(el("td", rollout.id, "num"));
    row.append(el("td", rollout.model + " v" + rollout.version));
    row.append(el("td", rollout.device_class));
    row.append(el("td", (rollout.canary || []).join(", ") || "–"));
    row.append(el("td", rollout.percent + " %", "num"));
    const stateCell = el("td");
    stateCell.append(el("span", rollout.state, "badge " + rollout.state));
    row.append(stateCell);
    row.append(el("td", rollout.pause_reason || "–", "reason"));
    return row;
  }

  function listCell(lines) {
    const cell = el("td");
    if (lines.length === 0) cell.textContent = "–";
    lines.forEach((line) => cell.append(el("div", line, "model")));
    return cell;
  }

  // ---- detail: facts and plots ----------------------------------------------------------------

  function select(deviceId) {
    state.selected = deviceId;
    document.querySelectorAll("#devices tbody tr").forEach((row) => {
      row.classList.toggle("selected", row.dataset.deviceId === deviceId);
    });
    $("detail").hidden = false;
    $("detail-title").textContent = deviceId;
    renderFacts(state.devices.find((d) => d.device_id === deviceId));
    loadHistory().catch(handleError);
  }

  function renderFacts(device) {
    const facts = (device && device.facts) || {};
    const items = [];
    Object.keys(facts).sort().forEach((key) => {
      items.push(el("dt", key), el("dd", facts[key]));
    });
    $("facts").replaceChildren(...items);
  }

  async function loadHistory() {
    const deviceId = state.selected;
    const request = ++state.historyRequest;
    const until = Math.ceil(Date.now() / 1000);
    const since = until - Number($("range").value);
    const path = "/api/v1/devices/" + encodeURIComponent(deviceId) + "/history?since=" + since + "&until=" + until;
    const history = await api(path);
    if (request !== state.historyRequest) return; // a newer selection or range won
    const points = (history.points || []).slice().sort((a, b) => a.time - b.time);
    $("resolution").textContent = history.resolution ? "resolution: " + history.resolution : "";
    $("no-history").hidden = points.length > 0;
    drawMemory(points);
    drawLatency(points);
  }

  function drawMemory(points) {
    const times = points.map((p) => p.time);
    const data = [times].concat(MEMORY_SERIES.map((s) => points.map((p) => valueOrNull(p[s.key]))));
    const series = [{}].concat(MEMORY_SERIES.map((s) => ({
      label: s.label, stroke: s.stroke, width: 2, scale: s.scale, value: (u, v) => num(v, 1),
    })));
    const axes = [
      {},
      { scale: "mb", label: "process / NvMap MB", size: 60 },
      { scale: "avail", side: 1, label: "available MB", size: 75, grid: { show: false } },
    ];
    plot("memory-chart", "memory", series, axes, data);
  }

  function drawLatency(points) {
    const names = [];
    points.forEach((p) => Object.keys(p.models || {}).forEach((n) => { if (!names.includes(n)) names.push(n); }));
    names.sort();
    const times = points.map((p) => p.time);
    const series = [{}];
    const data = [times];
    names.forEach((name, i) => {
      const color = PALETTE[i % PALETTE.length];
      ["p50_ms", "p99_ms"].forEach((field) => {
        series.push({
          label: name + " " + field.slice(0, 3), stroke: color, width: field === "p99_ms" ? 1.5 : 2,
          dash: field === "p99_ms" ? [6, 4] : undefined, scale: "ms", value: (u, v) => num(v, 2),
        });
        data.push(points.map((p) => valueOrNull(((p.models || {})[name] || {})[field])));
      });
    });
    plot("latency-chart", "latency", series, [{}, { scale: "ms", label: "ms", size: 60 }], data);
  }

  function valueOrNull(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  // Recreate a chart when its series change; otherwise only swap the data.
  function plot(containerId, key, series, axes, data) {
    const container = $(containerId);
    const signature = series.map((s) => s.label || "").join("|");
    const existing = state.charts[key];
    if (existing && existing.signature === signature) {
      existing.chart.setData(data);
    } else {
      if (existing) existing.chart.destroy();
      const opts = {
        width: Math.max(320, container.clientWidth || 800), height: 260,
        series: series, axes: axes, scales: { x: { time: true } },
        legend: { live: true }, cursor: { drag: { x: true, y: false } },
      };
      state.charts[key] = { signature: signature, chart: new uPlot(opts, data, container) };
    }
    container.dataset.points = String(data[0].length);
    container.dataset.series = String(series.length - 1);
  }

  function resizeCharts() {
    Object.keys(state.charts).forEach((key) => {
      const chart = state.charts[key].chart;
      const width = chart.root.parentElement.clientWidth;
      if (width > 0) chart.setSize({ width: Math.max(320, width), height: 260 });
    });
  }

  // ---- wiring ---------------------------------------------------------------------------------

  function init() {
    if (typeof uPlot === "undefined") {
      showMessage("The charting library did not load (/static/vendor/uPlot.iife.min.js): " +
        "the server's dashboard assets are not installed.");
    }
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      start();
    });
    $("sign-out").addEventListener("click", () => {
      stopRefresh();
      sessionStorage.removeItem(TOKEN_KEY);
      showMessage("");
      showTokenForm();
    });
    $("filter").addEventListener("input", renderDevices);
    $("range").addEventListener("change", () => loadHistory().catch(handleError));
    window.addEventListener("resize", resizeCharts);
    if (sessionStorage.getItem(TOKEN_KEY)) start();
    else showTokenForm();
  }

  init();
})();
