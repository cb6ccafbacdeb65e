// ibhub status page: live updates by server-sent events (hand-written, no build step).
// The server renders every section (ibhub/hub/ops/statusview.py); this script only
// swaps in the new HTML it pushes once a second. Without JavaScript the page is the
// same, reloaded every 5 s by <noscript><meta refresh>.
"use strict";
(function () {
  var live = document.getElementById("live");
  function show(text, cls) {
    live.textContent = text;
    live.className = "live " + cls;
  }
  if (!window.EventSource) { return; }
  var source = new EventSource("events");
  source.addEventListener("open", function () { show("live", "on"); });
  source.addEventListener("error", function () {
    // EventSource retries by itself (the server asks for 1 s).
    show("hub unreachable: retrying", "lost");
  });
  source.addEventListener("status", function (ev) {
    var d = JSON.parse(ev.data);
    Object.keys(d.sections).forEach(function (name) {
      var el = document.getElementById(name);
      if (el) { el.innerHTML = d.sections[name]; }
    });
    document.title = d.title;
    document.getElementById("asof").textContent = d.asof;
    document.body.setAttribute("data-state", d.state);
    show("live", "on");
  });
})();
