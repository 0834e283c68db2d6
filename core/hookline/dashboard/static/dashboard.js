// hookline dashboard: Today's refresh and the Trends charts. No inline script anywhere
// (the Content-Security-Policy forbids it); everything the page needs comes from here.
"use strict";
(function () {
  const body = document.body;
  const base = body.dataset.base || "";
  const page = body.dataset.page;

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }
  function secs(n) { return Math.floor(n / 60) + ":" + String(n % 60).padStart(2, "0"); }
  function ms(v) { return v === null || v === undefined ? "-" : Math.round(v).toLocaleString("en-US"); }

  async function getJSON(path) {
    const r = await fetch(base + path, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (r.status === 401) { window.location.assign(base + "/login"); throw new Error("signed out"); }
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  }

  function showToday(t) {
    document.getElementById("t-calls").textContent = t.calls;
    document.getElementById("t-booked").textContent = t.booked;
    document.getElementById("t-messages").textContent = t.messages_waiting;
    document.getElementById("t-tows").textContent = t.tows_waiting;
    document.getElementById("t-failed").textContent = t.notifications_failed;
    document.getElementById("t-v2v").textContent = ms(t.v2v_p50);
    document.getElementById("live-count").textContent = t.live.length;
    const rows = document.getElementById("live-rows");
    rows.replaceChildren();
    if (!t.live.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = text("td", "No call right now.");
      td.colSpan = 3;
      tr.append(td);
      rows.append(tr);
    }
    for (const c of t.live) {
      const tr = document.createElement("tr");
      tr.dataset.call = c.id;
      const state = text("td", "");
      state.append(text("span", c.state, "state"));
      tr.append(text("td", c.caller), text("td", secs(c.seconds)), state);
      rows.append(tr);
    }
    const outcomes = document.getElementById("outcomes");
    outcomes.replaceChildren();
    const names = Object.keys(t.outcomes).sort();
    if (!names.length) outcomes.append(text("li", "No calls yet today.", "empty"));
    for (const name of names) {
      const li = document.createElement("li");
      li.append(text("span", name.replaceAll("_", " "), "outcome " + name), " " + t.outcomes[name]);
      outcomes.append(li);
    }
    body.dataset.refreshed = String(Date.now());
  }

  function refreshToday() {
    const every = Number(body.dataset.refreshMs) || 5000;
    const tick = async () => {
      try { showToday(await getJSON("/api/today")); } catch (e) { console.warn(e); }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  function chart(id, title, days, series, opts) {
    const el = document.getElementById(id);
    const width = Math.max(320, el.clientWidth || 560);
    const o = Object.assign({
      width: width, height: 220,
      scales: { x: { time: true } },
      series: [{ label: "day" }].concat(series),
      axes: [{}, { size: 64 }],
    }, opts || {});
    return new uPlot(o, days, el);
  }

  async function drawTrends() {
    const wrap = document.querySelector(".charts");
    const data = await getJSON("/api/trends?days=" + (wrap.dataset.days || 30));
    // Every day of the range on the axis, empty where there were no calls.
    const span = Number(wrap.dataset.days || 30);
    const byDay = new Map(data.days.map((d) => [d.day, d]));
    const xs = [], days = [];
    const today = new Date();
    for (let i = span - 1; i >= 0; i--) {
      const d = new Date(Date.UTC(today.getFullYear(), today.getMonth(), today.getDate() - i, 12));
      xs.push(d.getTime() / 1000);
      days.push(byDay.get(d.toISOString().slice(0, 10)) || {});
    }
    const col = (k) => days.map((d) => (d[k] === undefined ? null : d[k]));
    const count = (k) => days.map((d) => d[k] || 0); // no calls that day: zero, not a gap
    const colors = ["#2f7d4f", "#3465a4", "#c17d11", "#a40000", "#555"];
    const lines = (names) => names.map(([label, _k], i) => ({ label: label, stroke: colors[i], width: 2, points: { show: true } }));
    const outcomes = [["completed", "completed"], ["transferred", "transferred"], ["rejected", "rejected"], ["other", "other"]];
    chart("c-outcomes", "", [xs].concat(outcomes.map(([_l, k]) => count(k))), lines(outcomes));
    chart("c-v2v", "", [xs, col("v2v_p50"), col("v2v_p95")], lines([["p50", 0], ["p95", 0]]));
    chart("c-tools", "", [xs, col("tool_failure_rate")], lines([["failure rate", 0]]),
      { scales: { x: { time: true }, y: { range: [0, 1] } } });
    chart("c-cost", "", [xs, col("cost_per_call")], lines([["$ per call", 0]]));
    const hours = Array.from({ length: 24 }, (_, h) => h);
    const byHour = hours.map((h) => { const r = data.hours.find((x) => x.hour === h); return r ? r.calls : 0; });
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.8] }) : undefined;
    chart("c-hours", "", [hours, byHour],
      [{ label: "calls", stroke: "#3465a4", fill: "#3465a466", paths: bars, points: { show: false } }],
      { scales: { x: { time: false } }, series: [{ label: "hour" }, { label: "calls", stroke: "#3465a4", fill: "#3465a466", paths: bars, points: { show: false } }],
        axes: [{ incrs: [1, 2, 3, 6], values: (u, vals) => vals.map((v) => v + ":00") }, { size: 64 }] });
    body.dataset.charts = String(document.querySelectorAll(".charts canvas").length);
  }

  if (page === "today") refreshToday();
  if (page === "trends") drawTrends().catch((e) => { console.warn(e); body.dataset.charts = "error"; });
})();
