// Fjord monitor dashboard: polls /api/data and draws the windows of one monitored model with uPlot.
// window.fjordCharts holds each chart's uPlot instance (its .data is what is drawn); window.fjordData
// the last payload. Both are what the browser test reads.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#cf222e", "#6e7781",
                "#953800", "#116329", "#0550ae", "#a40e26", "#4d2d00"];
window.fjordCharts = {};
window.fjordData = null;

const params = new URLSearchParams(location.search);
const select = document.getElementById("monitor");

function seconds(w) { return Date.parse(w.window_start) / 1000; }
function windowSeconds(w) { return (Date.parse(w.window_end) - Date.parse(w.window_start)) / 1000; }
function pct(v) { return v == null ? "-" : (100 * v).toFixed(1) + " %"; }
function fixed(v, d) { return v == null ? "-" : Number(v).toFixed(d); }

function chart(id, series, data, opts = {}) {
  const el = document.getElementById(id);
  const width = Math.max(el.clientWidth, 300);
  const existing = window.fjordCharts[id.replace("chart-", "")];
  const key = JSON.stringify(series.map((s) => s.label));
  if (existing && existing.fjordKey === key) {
    existing.setData(data);
    return existing;
  }
  if (existing) existing.destroy();
  const plot = new uPlot({
    width, height: 220,
    scales: { x: { time: opts.time !== false }, ...(opts.scales || {}) },
    axes: opts.axes,
    series: [{ label: opts.xLabel || "window" }, ...series],
    legend: { live: true },
  }, data, el);
  plot.fjordKey = key;
  window.fjordCharts[id.replace("chart-", "")] = plot;
  return plot;
}

function line(label, i, extra = {}) { return { label, stroke: COLORS[i % COLORS.length], width: 2, ...extra }; }

function draw(payload) {
  window.fjordData = payload;
  // the charts follow the versions that answered; a shadow's windows are in the versions table
  const shadow = payload.serving ? payload.serving.labels.shadow : undefined;
  const windows = payload.windows.filter((w) => w.version !== shadow);
  const closed = windows.filter((w) => w.final);
  const last = closed[closed.length - 1] || windows[windows.length - 1];
  const x = windows.map(seconds);
  document.getElementById("state").textContent = "monitor " + (payload.state || (payload.running ? "running" : "stopped"));
  document.getElementById("state").className = "pill " + (payload.running ? "running" : "stopped");
  const versions = [...new Set(payload.windows.map((w) => w.version))].sort((a, b) => a - b);
  const labels = payload.serving ? Object.entries(payload.serving.labels).map(([k, v]) => `${k} v${v}`).join(", ") : "";
  document.getElementById("served").textContent =
    `${payload.project}/${payload.model}` + (labels ? ` · served: ${labels}` : "") +
    (versions.length ? ` · versions in the log: ${versions.join(", ")}` : "");
  document.getElementById("updated").textContent = "updated " + new Date(payload.generated_at * 1000).toLocaleTimeString();

  const spec = payload.spec || {};
  document.getElementById("window-note").textContent = last
    ? `${windows.length} windows of ${windowSeconds(last)} s (event time); tiles show the last closed window, ` +
      `${new Date(Date.parse(last.window_start)).toLocaleTimeString()}, version ${last.version}.`
    : "No windows yet: is the model serving traffic with inference logging on?";
  if (last) {
    document.getElementById("tile-throughput").textContent = fixed(last.requests / windowSeconds(last), 1);
    const errors = document.getElementById("tile-errors");
    errors.textContent = pct(last.error_rate);
    errors.className = "value " + (last.error_rate >= spec.error_rate_threshold ? "bad" : "ok");
    document.getElementById("tile-p95").textContent = last.latency_p95_ms == null ? "-" : fixed(last.latency_p95_ms, 2) + " ms";
    document.getElementById("tile-positive").textContent = pct(last.positive_rate);
    const drift = document.getElementById("tile-drift");
    const scored = Object.values(last.features || {}).filter((f) => f.test in f).length;
    drift.textContent = last.drift ? `DRIFT: ${last.drifted_features.length} of ${scored}`
      : (last.drift_share == null ? "not scored" : `none of ${scored}`);
    drift.className = "value " + (last.drift ? "bad" : "ok");
    document.getElementById("tile-drift-features").textContent = last.drifted_features.join(", ");
  }
  // flagged requests' input-rule violations, over the windows shown, by field
  const byField = {};
  for (const w of windows) {
    for (const [field, n] of Object.entries(w.violations_by_field || {})) byField[field] = (byField[field] || 0) + n;
  }
  const violations = Object.values(byField).reduce((a, b) => a + b, 0);
  const violationTile = document.getElementById("tile-violations");
  violationTile.textContent = violations.toLocaleString();
  violationTile.className = "value " + (violations ? "bad" : "ok");
  document.getElementById("tile-violations-fields").textContent =
    Object.entries(byField).map(([field, n]) => `${field} ${n}`).join(", ");
  document.getElementById("tile-records").textContent = windows.reduce((n, w) => n + w.records, 0).toLocaleString();
  document.getElementById("tile-bad").textContent =
    `${windows.reduce((n, w) => n + w.late, 0)} · ${payload.dead_letters}`;

  chart("chart-throughput", [line("requests / s", 0)], [x, windows.map((w) => w.requests / windowSeconds(w))]);
  chart("chart-latency", [line("p50", 0), line("p95", 4), line("p99", 1)],
        [x, windows.map((w) => w.latency_p50_ms), windows.map((w) => w.latency_p95_ms), windows.map((w) => w.latency_p99_ms)]);
  chart("chart-errors", [line("error rate", 1), line("threshold", 6, { dash: [6, 4], width: 1 })],
        [x, windows.map((w) => w.error_rate), windows.map(() => spec.error_rate_threshold)]);
  chart("chart-predictions", [line("positive rate", 3), line("mean score", 2)],
        [x, windows.map((w) => w.positive_rate), windows.map((w) => w.prediction_mean)]);

  const test = spec.numeric_test || "psi";
  const threshold = test === "psi" ? spec.psi_threshold : spec.wasserstein_threshold;
  const features = [...new Set(windows.flatMap((w) => Object.keys(w.features || {})))].sort();
  const score = (w, f) => {
    const s = (w.features || {})[f];
    if (!s) return null;
    return s.test === "js" ? s.js ?? null : s[s.test] ?? null;
  };
  document.getElementById("drift-caption").textContent =
    `Drift per feature, log scale (${test.toUpperCase()} for numeric features, JS distance for categorical; threshold ${threshold})`;
  // A log scale: the threshold (0.2) and scores of 5 or more are both readable.
  chart("chart-drift", [...features.map((f, i) => line(f, i)), line("threshold", 7, { dash: [6, 4], width: 1 })],
        [x, ...features.map((f) => windows.map((w) => { const v = score(w, f); return v == null ? null : Math.max(v, 1e-3); })),
         windows.map(() => threshold)],
        { scales: { y: { distr: 3, log: 10 } } });

  const hist = (last && last.prediction_histogram) || [];
  const bins = hist.map((_, i) => (i + 0.5) / Math.max(hist.length, 1));
  chart("chart-histogram", [{ label: "predictions", stroke: COLORS[0], fill: COLORS[0] + "55",
                              paths: uPlot.paths.bars({ size: [0.9] }) }],
        [bins, hist], { time: false, xLabel: "score" });

  // CBPE per window (the stream's), and per day realized beside estimated (the performance job's), each
  // against the blessed test AUC of the version the window served
  const blessed = (v) => { const p = (payload.performance || []).find((r) => r.version === v); return p ? p.blessed_roc_auc : null; };
  chart("chart-estimate", [line("estimated ROC AUC", 0), line("blessed ROC AUC", 7, { dash: [6, 4], width: 1 })],
        [x, windows.map((w) => w.estimated_roc_auc), windows.map((w) => blessed(w.version))]);
  const perf = payload.performance || [];
  chart("chart-performance", [line("realized ROC AUC", 2, { points: { show: true } }),
                              line("estimated ROC AUC", 0, { points: { show: true } }),
                              line("blessed ROC AUC", 7, { dash: [6, 4], width: 1 })],
        [perf.map(seconds), perf.map((r) => r.roc_auc), perf.map((r) => r.estimated_roc_auc), perf.map((r) => r.blessed_roc_auc)],
        // a day on either side: one day's point is drawn in a readable range, not over years
        { scales: { x: { time: true, range: () => perf.length
          ? [seconds(perf[0]) - 86400, seconds(perf[perf.length - 1]) + 86400] : [0, 1] } } });
  const labelled = perf.reduce((n, r) => n + r.labelled_rows, 0);
  document.getElementById("performance-caption").textContent =
    `ROC AUC per day: realized (${labelled.toLocaleString()} labelled predictions) and estimated, against the blessed AUC`;

  // every version side by side over the windows shown: stable, canary, shadow
  window.fjordVersions = payload.versions || [];
  const versionBody = document.querySelector("#versions tbody");
  versionBody.innerHTML = "";
  for (const v of window.fjordVersions) {
    const row = document.createElement("tr");
    const cells = ["v" + v.version, v.labels.join(", ") || "-", v.requests.toLocaleString(), pct(v.error_rate),
                   v.p99_ms == null ? "-" : fixed(v.p99_ms, 2) + " ms", pct(v.positive_rate), fixed(v.prediction_mean, 4),
                   fixed(v.estimated_roc_auc, 4),
                   v.realized_roc_auc == null ? "-" : `${fixed(v.realized_roc_auc, 4)} (${v.labelled.toLocaleString()} rows)`];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
    versionBody.appendChild(row);
  }

  // the latest window of each version, worst feature first
  const skew = payload.skew || [];
  const latest = {};
  for (const r of skew) if (!latest[r.version] || r.window_start > latest[r.version]) latest[r.version] = r.window_start;
  const shown = skew.filter((r) => latest[r.version] === r.window_start)
    .sort((a, b) => a.version - b.version || b.share - a.share || a.feature.localeCompare(b.feature));
  window.fjordSkew = shown;
  document.getElementById("skew-note").textContent = shown.length
    ? `The inputs each model version was served (after the online lookup), against the features the ETL computed for the same rows, ` +
      `by key; ${shown[0].rows.toLocaleString()} rows of ${new Date(Date.parse(shown[0].window_start)).toLocaleDateString()} (v${shown[0].version}).`
    : "No skew measured yet: it needs archived requests with a key, and the ETL of their batch.";
  const skewBody = document.querySelector("#skew tbody");
  skewBody.innerHTML = "";
  for (const r of shown) {
    const worst = (r.worst || [])[0] || {};
    const row = document.createElement("tr");
    const cells = ["v" + r.version, r.feature, r.share == null ? "-" : (100 * r.share).toFixed(2) + " %", fixed(r.mean_abs_diff, 4),
                   r.beyond ? worst.inference_id || "" : "", r.beyond ? String(worst.served) : "", r.beyond ? String(worst.offline) : ""];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2) td.className = r.share > 0.01 ? "bad" : "ok";
      row.appendChild(td);
    });
    skewBody.appendChild(row);
  }

  const body = document.querySelector("#alerts tbody");
  body.innerHTML = "";
  for (const a of [...payload.alerts].reverse()) {
    const row = document.createElement("tr");
    const what = a.message + (a.suspect_of_skew ? " [suspect: skew in the same window]" : "");
    const cells = [new Date(Date.parse(a.window_start)).toLocaleString(), "v" + a.version, a.kind, what];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
    const state = document.createElement("td");
    state.textContent = a.state;
    state.className = "state-" + a.state;
    row.appendChild(state);
    const run = document.createElement("td");
    if (a.dag_run_id && payload.airflow_url) {
      const link = document.createElement("a");
      link.href = `${payload.airflow_url}/dags/fraud_retrain/runs/${encodeURIComponent(a.dag_run_id)}`;
      link.textContent = a.dag_run_id;
      run.appendChild(link);
    } else {
      run.textContent = a.state === "posted" ? "starting..." : "";
    }
    row.appendChild(run);
    body.appendChild(row);
  }
}

async function poll() {
  const [project, model] = (select.value || "/").split("/");
  if (project && model) {
    try {
      const answer = await fetch(`/api/data?project=${encodeURIComponent(project)}&model=${encodeURIComponent(model)}`);
      if (answer.ok) draw(await answer.json());
    } catch (err) {
      document.getElementById("updated").textContent = "dashboard server unreachable";
    }
  }
  setTimeout(poll, POLL_MS);
}

async function init() {
  const monitors = await (await fetch("/api/monitors")).json();
  for (const m of monitors) {
    const option = document.createElement("option");
    option.value = `${m.project}/${m.model}`;
    option.textContent = `${m.project} / ${m.model}` + (m.running ? "" : " (stopped)");
    select.appendChild(option);
  }
  const wanted = params.get("project") && params.get("model") ? `${params.get("project")}/${params.get("model")}` : null;
  if (wanted && monitors.some((m) => `${m.project}/${m.model}` === wanted)) select.value = wanted;
  select.addEventListener("change", () => { for (const c of Object.values(window.fjordCharts)) c.destroy(); window.fjordCharts = {}; });
  poll();
}

init();
