"""The admin page of a rating session: progress per rater and the live scores with intervals.

Its link (``/admin#admin=TOKEN``) is printed by ``sr-rate`` when it starts. The token is read
from the fragment (never sent to a server or proxy), kept in the tab's ``sessionStorage`` and
sent as ``Authorization: Bearer``; the page polls ``/api/admin`` every few seconds. Names are
only ever inserted with ``textContent``.
"""

ADMIN_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sr-rate admin</title><link rel="stylesheet" href="/app.css"></head>
<body data-state="loading">
<header><b>sr-rate</b> &middot; admin &middot; <span id="summary"></span></header>
<section id="admin" hidden>
  <h3>Progress</h3>
  <table id="progress-table"><thead><tr><th>rater</th><th>rated</th><th>of</th></tr></thead>
    <tbody></tbody></table>
  <h3>Scores (live)</h3>
  <p class="help" id="scores-help"></p>
  <table id="scores-table"><thead><tr><th>rank</th><th>run</th><th>score</th>
    <th>95% interval</th><th>votes</th><th>win rate</th></tr></thead><tbody></tbody></table>
  <p class="help" id="agreement"></p>
</section>
<p id="error" role="alert" hidden></p>
<script src="/admin.js"></script>
</body></html>
"""

ADMIN_JS = r"""
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var body = document.body;
  var key = "sr-rate-admin";
  var m = /[#&]admin=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  if (m) {
    try { sessionStorage.setItem(key, m[1]); } catch (e) { /* private mode */ }
    history.replaceState(null, "", window.location.pathname);
  }
  var token = m ? m[1] : null;
  if (!token) { try { token = sessionStorage.getItem(key); } catch (e) { token = null; } }

  function error(msg) {
    $("error").textContent = msg; $("error").hidden = !msg;
    if (msg) { body.dataset.error = msg; } else { delete body.dataset.error; }
  }
  function fmt(x, d) { return x === null || x === undefined ? "n/a" : x.toFixed(d); }
  function row(tbody, cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td"); td.textContent = String(c); tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return tr;
  }
  function render(v) {
    $("summary").textContent = "session " + v.session + " (" + v.mode + "), " + v.items +
      " items per rater" + (v.by_invitation ? ", by invitation" : "");
    var pt = $("progress-table").querySelector("tbody");
    pt.textContent = "";
    var progress = {};
    v.progress.forEach(function (p) {
      row(pt, [p.rater, p.done, p.total]).dataset.rater = p.rater;
      progress[p.rater] = p.done;
    });
    body.dataset.progress = JSON.stringify(progress);
    var st = $("scores-table").querySelector("tbody");
    st.textContent = "";
    if (!v.scores) {
      $("scores-help").textContent = "No vote yet.";
      body.dataset.votes = "0";
    } else {
      var s = v.scores;
      $("scores-help").textContent = (v.mode === "pairwise" ?
        "Bradley-Terry log-strength (mean 0)" : "Mean opinion score (1-5)") +
        "; 95% bootstrap interval over " + s.bootstrap + " resamples of " + s.votes + " votes.";
      s.runs.forEach(function (r, k) {
        row(st, [k + 1, r.run, fmt(r.score, 3), "[" + fmt(r.ci_low, 3) + ", " +
          fmt(r.ci_high, 3) + "]", r.votes, fmt(r.win_rate, 3)]);
      });
      $("agreement").textContent = "Krippendorff's alpha " + fmt(s.krippendorff_alpha, 3) +
        " over " + s.shared_items + " item(s) rated by two raters or more.";
      body.dataset.votes = String(s.votes);
      body.dataset.top = s.runs[0].run;
    }
    $("admin").hidden = false;
    body.dataset.state = "admin";
  }
  function poll() {
    if (!token) {
      error("Open the admin link sr-rate printed when it started (it ends with #admin=...).");
      body.dataset.state = "denied";
      return;
    }
    fetch("/api/admin", { headers: { "Authorization": "Bearer " + token }, cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (j) { return { status: r.status, body: j }; });
      })
      .then(function (r) {
        if (r.status !== 200) {
          error(r.body.error || "refused"); body.dataset.state = "denied"; return;
        }
        error(""); render(r.body);
        setTimeout(poll, 3000);
      })
      .catch(function (e) { error("cannot reach the sr-rate server: " + e); setTimeout(poll, 5000); });
  }
  poll();
})();
"""
