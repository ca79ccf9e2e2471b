"""The rating page: one HTML file, one script, one style sheet; nothing fetched from elsewhere.

Names (the rater's) are only ever inserted with ``textContent``; the page embeds no
server-side data, and the Content-Security-Policy allows scripts from the server only.

A session by invitation is opened with an invite link, ``/#invite=TOKEN``: the script moves the
token from the fragment (which browsers never send to a server) to ``localStorage``, removes it
from the address bar and sends it as ``Authorization: Bearer`` with every API call; the server
then knows the rater, so there is no name to type. An open session (localhost) asks for a name.
"""

INDEX_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sr-rate</title><link rel="stylesheet" href="/app.css"></head>
<body data-state="loading">
<header>
  <b>sr-rate</b> &middot; blind comparison
  <span id="who-box" hidden> &middot; rater: <b id="who"></b>
    (<a href="#" id="switch">not you?</a>)</span>
  <span id="progress"></span>
</header>
<section id="login" hidden>
  <form id="login-form">
    <p>Pick the better-looking image in each pair. Your name keeps your votes apart from
    other raters' and lets you resume later.</p>
    <label>Your name <input id="name" maxlength="64" autocomplete="name" required></label>
    <button type="submit" id="start">Start</button>
  </form>
</section>
<section id="rate" hidden>
  <p class="help" id="help"></p>
  <div id="panels"></div>
  <div id="buttons"></div>
  <p class="help">Zoom: <button id="zoom-out" type="button">&minus;</button>
    <span id="zoom-level"></span>
    <button id="zoom-in" type="button">+</button> (keys + and &minus;). Drag a zoomed view
    to pan all of them; click a 1:1 view to centre the zoom there.</p>
</section>
<section id="done" hidden><h2>All done, thank you!</h2>
  <p id="done-text"></p></section>
<p id="error" role="alert" hidden></p>
<script src="/app.js"></script>
</body></html>
"""

APP_CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #f4f4f4; }
header { margin-bottom: 12px; } #progress { float: right; }
#panels { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
.panel { background: #fff; padding: 8px; border-radius: 6px; text-align: center; }
.panel h3 { margin: 0 0 6px 0; font-size: 1em; }
.onex { position: relative; display: inline-block; cursor: crosshair; line-height: 0; }
.onex img { display: block; image-rendering: pixelated; }
.marker { position: absolute; border: 1px solid #e33; pointer-events: none; }
.viewport { width: 320px; height: 320px; overflow: hidden; position: relative;
  margin-top: 8px; cursor: grab; background: #000; }
.viewport img { position: absolute; left: 0; top: 0; image-rendering: pixelated;
  transform-origin: 0 0; user-select: none; -webkit-user-drag: none; }
#buttons { margin-top: 14px; display: flex; gap: 12px; flex-wrap: wrap; }
#buttons button { font-size: 1.1em; padding: 10px 18px; }
.help { color: #555; font-size: 0.9em; }
#error { color: #b00; font-weight: bold; }
"""

APP_JS = r"""
"use strict";
(function () {
  var body = document.body;
  var state = { rater: null, token: null, item: null, zoom: 4, cx: 0, cy: 0, size: 0,
    busy: false };
  var $ = function (id) { return document.getElementById(id); };

  function show(which) {
    ["login", "rate", "done"].forEach(function (s) { $(s).hidden = s !== which; });
    body.dataset.state = which;
  }
  function error(msg) {
    var e = $("error");
    e.textContent = msg; e.hidden = !msg;
    if (msg) { body.dataset.error = msg; } else { delete body.dataset.error; }
  }
  function api(method, url, data) {
    var opts = { method: method, headers: {} , cache: "no-store" };
    if (state.token) { opts.headers["Authorization"] = "Bearer " + state.token; }
    if (data !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(data);
    }
    return fetch(url, opts).then(function (r) {
      return r.json().then(function (j) { return { status: r.status, body: j }; });
    });
  }
  function showRater(name) {
    state.rater = name;
    $("who").textContent = name;
    $("who-box").hidden = false;
  }
  function setRater(name) {
    state.rater = name;
    try { localStorage.setItem("sr-rate-rater", name); } catch (e) { /* private mode */ }
    var u = new URL(window.location.href);
    u.searchParams.set("rater", name);
    history.replaceState(null, "", u.toString());
    $("who").textContent = name;
    $("who-box").hidden = false;
  }

  // ------------------------------------------------------------------ panels
  function panel(role, title) {
    var p = document.createElement("div");
    p.className = "panel"; p.id = "panel-" + role;
    var h = document.createElement("h3"); h.textContent = title; p.appendChild(h);
    var onex = document.createElement("div"); onex.className = "onex";
    var img1 = document.createElement("img"); img1.id = role + "-1x"; img1.alt = title + " 1:1";
    var marker = document.createElement("div"); marker.className = "marker";
    onex.appendChild(img1); onex.appendChild(marker); p.appendChild(onex);
    p.appendChild(document.createElement("br"));
    var vp = document.createElement("div"); vp.className = "viewport"; vp.id = role + "-view";
    var img2 = document.createElement("img"); img2.id = role + "-zoom"; img2.alt = title + " zoomed";
    img2.draggable = false;
    vp.appendChild(img2); p.appendChild(vp);
    onex.addEventListener("click", function (ev) {
      var r = img1.getBoundingClientRect();
      state.cx = (ev.clientX - r.left) * state.size / r.width;
      state.cy = (ev.clientY - r.top) * state.size / r.height;
      layout();
    });
    var drag = null;
    vp.addEventListener("mousedown", function (ev) {
      drag = { x: ev.clientX, y: ev.clientY, cx: state.cx, cy: state.cy };
      ev.preventDefault();
    });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) { return; }
      state.cx = drag.cx - (ev.clientX - drag.x) / state.zoom;
      state.cy = drag.cy - (ev.clientY - drag.y) / state.zoom;
      layout();
    });
    window.addEventListener("mouseup", function () { drag = null; });
    return p;
  }

  function layout() {
    var view = 320, half = view / state.zoom / 2;
    // Keep the view on the crop; centre it when the whole crop fits.
    var clamp = function (c) {
      return 2 * half >= state.size ? state.size / 2 : Math.min(Math.max(c, half), state.size - half);
    };
    state.cx = clamp(state.cx); state.cy = clamp(state.cy);
    var tx = view / 2 - state.cx * state.zoom, ty = view / 2 - state.cy * state.zoom;
    document.querySelectorAll(".viewport img").forEach(function (im) {
      im.style.width = (state.size * state.zoom) + "px";
      im.style.height = (state.size * state.zoom) + "px";
      im.style.transform = "translate(" + tx + "px," + ty + "px)";
    });
    document.querySelectorAll(".marker").forEach(function (m) {
      m.style.left = (state.cx - half) + "px"; m.style.top = (state.cy - half) + "px";
      m.style.width = (2 * half) + "px"; m.style.height = (2 * half) + "px";
    });
    $("zoom-level").textContent = state.zoom + "x";
    body.dataset.pan = Math.round(state.cx) + "," + Math.round(state.cy);
  }

  function button(id, label, handler) {
    var b = document.createElement("button");
    b.type = "button"; b.id = id; b.textContent = label;
    b.addEventListener("click", handler);
    $("buttons").appendChild(b);
  }

  function render(next) {
    state.item = next.item; state.size = next.size; state.busy = true;
    state.cx = next.size / 2; state.cy = next.size / 2;
    body.dataset.ready = "0";
    body.dataset.item = String(next.item);
    $("progress").textContent = next.done + " / " + next.total + " rated";
    body.dataset.progress = next.done + "/" + next.total;
    var panels = $("panels"), buttons = $("buttons");
    panels.textContent = ""; buttons.textContent = "";
    var roles = [];
    if (next.mode === "pairwise") {
      roles.push(["left", "Left"]);
      if (next.images.gt) { roles.push(["gt", "Reference (original)"]); }
      roles.push(["right", "Right"]);
      $("help").textContent = "Which image looks better? Keys: \u2190 or 1 = left, " +
        "\u2192 or 2 = right, \u2193 or S or space = same.";
      button("btn-left", "\u2190 Left is better", function () { vote({ choice: "left" }); });
      button("btn-same", "Same", function () { vote({ choice: "same" }); });
      button("btn-right", "Right is better \u2192", function () { vote({ choice: "right" }); });
    } else {
      roles.push(["left", "Image"]);
      if (next.images.gt) { roles.push(["gt", "Reference (original)"]); }
      $("help").textContent = "How good does the image look? Keys 1 (bad) to 5 (excellent).";
      ["Bad", "Poor", "Fair", "Good", "Excellent"].forEach(function (word, k) {
        button("btn-r" + (k + 1), (k + 1) + " " + word, function () { vote({ rating: k + 1 }); });
      });
    }
    var pending = 0;
    roles.forEach(function (r) {
      panels.appendChild(panel(r[0], r[1]));
      [r[0] + "-1x", r[0] + "-zoom"].forEach(function (id) {
        pending += 1;
        var im = $(id);
        im.onload = im.onerror = function () {
          pending -= 1;
          if (pending === 0) { state.busy = false; body.dataset.ready = "1"; }
        };
        im.src = next.images[r[0]];
      });
    });
    layout();
    show("rate");
  }

  function loadNext() {
    state.busy = true;
    var url = state.token ? "/api/next" : "/api/next?rater=" + encodeURIComponent(state.rater);
    return api("GET", url).then(function (r) {
      if (r.status !== 200) {
        error(r.body.error || "the server refused");
        if (r.status === 403) { body.dataset.state = "denied"; }
        return;
      }
      error("");
      if (state.token && r.body.rater) { showRater(r.body.rater); }
      if (r.body.finished) {
        $("progress").textContent = r.body.done + " / " + r.body.total + " rated";
        body.dataset.progress = r.body.done + "/" + r.body.total;
        $("done-text").textContent = "You rated all " + r.body.total +
          " items. You can close this tab.";
        show("done");
        return;
      }
      render(r.body);
    }).catch(function (e) { error("cannot reach the sr-rate server: " + e); });
  }

  function vote(v) {
    if (state.busy || state.item === null) { return; }
    state.busy = true;
    var data = state.token ? { item: state.item } : { rater: state.rater, item: state.item };
    Object.keys(v).forEach(function (k) { data[k] = v[k]; });
    api("POST", "/api/vote", data).then(function (r) {
      if (r.status === 200 || r.status === 409) { return loadNext(); }
      state.busy = false;
      error(r.body.error || "the vote was refused");
    }).catch(function (e) { state.busy = false; error("vote not sent: " + e); });
  }

  document.addEventListener("keydown", function (ev) {
    if (body.dataset.state !== "rate" || ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var k = ev.key, pairwise = $("btn-left") !== null;
    if (k === "+" || k === "=") { state.zoom = Math.min(16, state.zoom * 2); layout(); return; }
    if (k === "-" || k === "_") { state.zoom = Math.max(1, state.zoom / 2); layout(); return; }
    if (pairwise) {
      if (k === "ArrowLeft" || k === "1") { vote({ choice: "left" }); }
      else if (k === "ArrowRight" || k === "2") { vote({ choice: "right" }); }
      else if (k === "ArrowDown" || k === "s" || k === "S" || k === " ") { vote({ choice: "same" }); }
      else { return; }
    } else if (k >= "1" && k <= "5" && k.length === 1) {
      vote({ rating: Number(k) });
    } else { return; }
    ev.preventDefault();
  });
  $("zoom-in").addEventListener("click", function () {
    state.zoom = Math.min(16, state.zoom * 2); layout();
  });
  $("zoom-out").addEventListener("click", function () {
    state.zoom = Math.max(1, state.zoom / 2); layout();
  });
  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var name = $("name").value.trim();
    if (!name) { return; }
    setRater(name);
    loadNext();
  });
  $("switch").addEventListener("click", function (ev) {
    ev.preventDefault();
    try { localStorage.removeItem("sr-rate-rater"); } catch (e) { /* ignore */ }
    var u = new URL(window.location.href);
    u.searchParams.delete("rater");
    history.replaceState(null, "", u.toString());
    state.rater = null; $("who-box").hidden = true; show("login");
  });

  // An invite link's token: from the fragment (once) into localStorage, out of the address bar.
  var m = /[#&]invite=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  if (m) {
    try { localStorage.setItem("sr-rate-invite", m[1]); } catch (e) { /* private mode */ }
    history.replaceState(null, "", window.location.pathname);
    state.token = m[1];
  } else {
    try { state.token = localStorage.getItem("sr-rate-invite"); } catch (e) { state.token = null; }
  }
  function start(session) {
    if (state.token) { $("switch").hidden = true; loadNext(); return; }
    if (session.by_invitation) {
      error("This session is by invitation: open the invite link you were given.");
      body.dataset.state = "denied";
      return;
    }
    var initial = new URL(window.location.href).searchParams.get("rater");
    if (!initial) { try { initial = localStorage.getItem("sr-rate-rater"); } catch (e) { initial = null; } }
    if (initial && initial.trim()) { setRater(initial.trim()); loadNext(); } else { show("login"); }
  }
  api("GET", "/api/session").then(function (r) { start(r.body); })
    .catch(function (e) { error("cannot reach the sr-rate server: " + e); });
})();
"""
