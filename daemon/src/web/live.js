// orgsync console: live updates from /events (server-sent events).
// Without this script every page still works; it only refreshes numbers.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  function set(el, text) { if (el && el.textContent !== text) { el.textContent = text; } }
  var es = new EventSource("/events");
  es.addEventListener("status", function (m) {
    var s;
    try { s = JSON.parse(m.data); } catch (e) { return; }
    var badge = document.getElementById("nav-inbox");
    if (badge) {
      set(badge, s.inbox > 0 ? String(s.inbox) : "");
      badge.hidden = !(s.inbox > 0);
      badge.setAttribute("aria-label", s.inbox + " waiting");
    }
    set(document.getElementById("sync-progress"), s.not_acked === 0
      ? "Every change is acknowledged by every partner."
      : s.not_acked + " change(s) not yet acknowledged by partners.");
    (s.partners || []).forEach(function (p) {
      var row = document.querySelector('tr[data-account="' + p.account + '"]');
      if (!row) { return; }
      ["connected", "last_sync", "not_acked", "lag"].forEach(function (k) {
        set(row.querySelector('[data-live="' + k + '"]'), String(p[k]));
      });
    });
    document.documentElement.setAttribute("data-live", "on");
  });
})();
