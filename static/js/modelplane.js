// A little JavaScript where it earns its place: team switcher, copy buttons, confirmations, live counts.
(function () {
  "use strict";
  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });
  document.querySelectorAll("[data-toggle-nav]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var nav = document.getElementById(btn.getAttribute("aria-controls"));
      var open = nav.classList.toggle("open");
      btn.setAttribute("aria-expanded", open ? "true" : "false");
    });
  });
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var text = document.querySelector(btn.getAttribute("data-copy")).textContent.trim();
      if (navigator.clipboard) {
        navigator.clipboard.writeText(text).then(function () { btn.textContent = "Copied"; });
      }
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  var live = document.querySelector("[data-live-counts]");
  if (live) {
    var refresh = function () {
      fetch(live.getAttribute("data-live-counts"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          Object.keys(data).forEach(function (key) {
            var el = live.querySelector('[data-count="' + key + '"]');
            if (el) { el.textContent = data[key] === null ? "–" : data[key]; }
          });
        })
        .catch(function () { /* the next tick tries again */ });
    };
    setInterval(refresh, 15000);
  }
})();
