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
  // The user menu is a <details>: close it on a click elsewhere or on Escape, as a menu does.
  var userMenu = document.querySelector(".user-menu");
  if (userMenu) {
    document.addEventListener("click", function (event) {
      if (userMenu.open && !userMenu.contains(event.target)) { userMenu.open = false; }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && userMenu.open) {
        userMenu.open = false;
        userMenu.querySelector("summary").focus();
      }
    });
  }
  // Copy: the Clipboard API exists only on secure origins (https, localhost); elsewhere select the text so
  // that Ctrl+C / Cmd+C copies it, and say so.
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var source = document.querySelector(btn.getAttribute("data-copy"));
      var text = source.textContent.trim();
      var selectIt = function () {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        btn.textContent = "Selected: press Ctrl+C";
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { btn.textContent = "Copied"; }, selectIt);
      } else {
        selectIt();
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
    setInterval(function () { if (!document.hidden) { refresh(); } }, 15000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
  }
})();
