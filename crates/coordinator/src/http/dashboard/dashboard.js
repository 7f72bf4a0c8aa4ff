// legacygpu dashboard: live updates from the event stream (/ui/events,
// server-sent events with the session cookie). Pages work without this
// script; with it, the page's main part is fetched again when an event it
// cares about arrives (`data-live` on <body>), at most once per stats interval, and
// the events page lists the stream as it comes, and a generation's page
// shows its tokens as they stream (its own event source). No polling loop.
(function () {
  "use strict";
  // A generation's tokens, kept across the page's refreshes.
  var streamed = "";
  function showStream() {
    var pre = document.getElementById("task-stream");
    if (pre) pre.textContent = streamed;
  }
  var streamAt = document.getElementById("task-stream");
  if (streamAt && streamAt.getAttribute("data-stream")) {
    var tokens = new EventSource(streamAt.getAttribute("data-stream"));
    tokens.addEventListener("progress", function (msg) {
      try { streamed += JSON.parse(msg.data).text || ""; } catch (_) { return; }
      showStream();
    });
    // The result (or an error) ends it; the page's refresh shows the outcome.
    function end() { tokens.close(); refresh(); }
    tokens.addEventListener("result", end);
    tokens.addEventListener("error", function (msg) { if (msg.data) end(); else tokens.close(); });
  }
  var live = (document.body.getAttribute("data-live") || "").split(/\s+/).filter(Boolean);
  var status = document.getElementById("live-status");
  var table = document.querySelector("#events tbody");
  if (!live.length && !table) return;
  // The server puts its settings before this script (dashboard/mod.rs).
  var settings = window.LEGACYGPU;
  // `again`: an event came while a fetch was on its way, which may have
  // read the page before the change: one more fetch follows it.
  var pending = false, fetching = false, again = false, last = 0, MIN_GAP_MS = settings.minGapMs;

  function settled() {
    pending = fetching = false;
    if (again) { again = false; refresh(); }
  }

  function refresh() {
    if (pending) { again = again || fetching; return; }
    pending = true;
    var wait = Math.max(0, last + MIN_GAP_MS - Date.now());
    setTimeout(function () {
      last = Date.now();
      fetching = true;
      fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          // Not while the operator is typing in a form of the page.
          var active = document.activeElement;
          if (html !== null && !(active && active.form && active.type !== "submit")) {
            document.getElementById("main").innerHTML = html;
            showStream();
          }
          settled();
        })
        .catch(settled);
    }, wait);
  }

  function wanted(e) {
    var form = document.getElementById("event-filter");
    if (!form) return true;
    var kinds = Array.prototype.map.call(form.querySelectorAll("input[name=kind]:checked"), function (i) { return i.value; });
    var task = form.querySelector("input[name=task_id]").value.trim();
    return kinds.indexOf(e.event) >= 0 && (!task || e.task_id === task);
  }

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    tr.appendChild(td);
  }

  function append(e) {
    if (!wanted(e)) return;
    var tr = document.createElement("tr");
    tr.className = "event " + e.event;
    cell(tr, new Date(e.ts_ms).toISOString().slice(11, 23));
    cell(tr, e.event);
    cell(tr, e.task_id);
    cell(tr, e.worker_id);
    cell(tr, JSON.stringify(e));
    table.insertBefore(tr, table.firstChild);
    while (table.rows.length > 500) table.deleteRow(table.rows.length - 1);
  }

  var source = new EventSource("/ui/events");
  // What changed between the page's render (or a lost connection) and this
  // subscription is in no event: fetch the page's state once on each open.
  source.onopen = function () {
    if (status) status.textContent = "live";
    if (live.length) refresh();
  };
  source.onerror = function () { if (status) status.textContent = "reconnecting…"; };
  source.onmessage = function () {};
  function on(kind) {
    source.addEventListener(kind, function (msg) {
      var e;
      try { e = JSON.parse(msg.data); } catch (_) { return; }
      if (table) append(e);
      if (live.indexOf(kind) >= 0) refresh();
    });
  }
  settings.kinds.forEach(on);
  // Events were missed: what the page shows may be behind.
  source.addEventListener("dropped", function () { if (live.length) refresh(); });
})();
