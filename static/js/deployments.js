// The serving pages' JavaScript: the deployment page follows its deployment (status polling, live sections,
// Plotly charts), the "try it" box, the create form's model -> version narrowing, and the replica output's
// auto-refresh. Every page works without it; this keeps long work visible.
(function () {
  "use strict";

  // ------------------------------------------------------------------ Plotly figures (loaded only when needed)
  var plotlyLoading = null;
  function withPlotly(src, done) {
    if (window.Plotly) { done(); return; }
    if (!src) { return; }
    if (!plotlyLoading) {
      plotlyLoading = new Promise(function (resolve, reject) {
        var existing = document.querySelector('script[src="' + src + '"]');
        var script = existing || document.createElement("script");
        script.addEventListener("load", resolve);
        script.addEventListener("error", reject);
        if (!existing) { script.src = src; document.head.appendChild(script); }
      });
    }
    plotlyLoading.then(done, function () { /* no charts; the numbers are in the tables */ });
  }

  function drawFigures(root) {
    var charts = root.querySelectorAll("[data-plotly-figure]");
    if (!charts.length) { return; }
    var section = document.querySelector("[data-plotly-src]");
    withPlotly(section && section.getAttribute("data-plotly-src"), function () {
      charts.forEach(function (el) {
        var source = document.getElementById(el.getAttribute("data-plotly-figure"));
        if (!source) { return; }
        var figure = JSON.parse(source.textContent);
        window.Plotly.newPlot(el, figure.data, figure.layout, {displayModeBar: false, responsive: true})
          .then(function () { el.setAttribute("data-rendered", "1"); });
      });
    });
  }
  if (document.querySelector("[data-plotly-figure]")) {
    if (document.readyState === "complete") { drawFigures(document); }
    else { window.addEventListener("load", function () { drawFigures(document); }); }
  }

  // ------------------------------------------------------------------ the deployment page follows its deployment
  // status.json is cheap; when its fingerprint changes (status, replicas, variants, a new timeline entry), the
  // page's live sections are fetched again, rendered by the server as on a reload, and swapped in place.
  var poll = document.querySelector("[data-status-poll]");
  if (poll) {
    var statusUrl = poll.getAttribute("data-status-poll");
    var fingerprint = poll.getAttribute("data-fingerprint");
    var lastCharts = Date.now();
    var refreshSections = function () {
      return fetch(window.location.pathname, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live]").forEach(function (el) {
            var fresh = doc.querySelector('[data-live="' + el.getAttribute("data-live") + '"]');
            if (fresh && fresh.innerHTML !== el.innerHTML) {
              el.innerHTML = fresh.innerHTML;
              if (el.getAttribute("data-live") === "charts") { drawFigures(el); }
            }
          });
          lastCharts = Date.now();
        });
    };
    var tick = function () {
      if (document.hidden) { setTimeout(tick, 3000); return; }
      fetch(statusUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && data.fingerprint !== fingerprint) {
            fingerprint = data.fingerprint;
            poll.setAttribute("data-fingerprint", fingerprint);
            return refreshSections();
          }
          if (Date.now() - lastCharts > 60000) { return refreshSections(); } // new minutes of traffic
          return null;
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () {
          var stopped = poll.querySelector('[data-status="stopped"]');
          setTimeout(tick, stopped ? 15000 : 3000);
        });
    };
    setTimeout(tick, 3000);
  }

  // ------------------------------------------------------------------ "try it": one request through the gateway
  var tryForm = document.querySelector("[data-try-form]");
  if (tryForm) {
    var result = document.querySelector("[data-try-result]");
    var meta = result.querySelector("[data-try-meta]");
    var errorBox = result.querySelector("[data-try-error]");
    var bodyBox = result.querySelector("[data-try-body]");
    var send = tryForm.querySelector("[data-try-send]");
    var addMeta = function (label, value, cls) {
      var span = document.createElement("span");
      var strong = document.createElement("strong");
      strong.textContent = label + " ";
      span.appendChild(strong);
      var val = document.createElement("span");
      val.textContent = value;
      if (cls) { val.className = cls; }
      val.setAttribute("data-try-" + label.toLowerCase().replace(/\s+/g, "-"), value);
      span.appendChild(val);
      meta.appendChild(span);
    };
    tryForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var payload = tryForm.querySelector("[data-try-payload]").value;
      var token = tryForm.querySelector("[name=csrfmiddlewaretoken]").value;
      send.disabled = true;
      send.textContent = "Sending…";
      meta.textContent = "";
      errorBox.hidden = true;
      errorBox.textContent = "";
      bodyBox.textContent = "";
      bodyBox.hidden = true;
      result.hidden = false;
      fetch(tryForm.action, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token},
        body: JSON.stringify({payload: payload})
      })
        .then(function (r) {
          return r.json().then(function (data) { return {http: r.status, data: data}; },
                               function () { return {http: r.status, data: null}; });
        })
        .then(function (answer) {
          var data = answer.data;
          if (data && data.error) {
            var p = document.createElement("p");
            p.textContent = data.error.message;
            errorBox.appendChild(p);
            errorBox.hidden = false;
            result.setAttribute("data-try-outcome", "error-" + answer.http);
            return;
          }
          if (!data) {
            errorBox.textContent = "The control plane answered " + answer.http + " without a readable body.";
            errorBox.hidden = false;
            result.setAttribute("data-try-outcome", "error-" + answer.http);
            return;
          }
          addMeta("Status", String(data.status), data.status < 400 ? "code-ok" : "code-bad");
          addMeta("Latency", data.latency_ms + " ms");
          addMeta("Request id", data.request_id || "–");
          bodyBox.textContent = typeof data.body === "string" ? data.body : JSON.stringify(data.body, null, 2);
          bodyBox.hidden = false;
          result.setAttribute("data-try-outcome", "answered-" + data.status);
        })
        .catch(function () {
          errorBox.textContent = "The control plane did not answer. Check your connection and try again.";
          errorBox.hidden = false;
          result.setAttribute("data-try-outcome", "network");
        })
        .then(function () {
          send.disabled = false;
          send.textContent = "Send";
        });
    });
  }

  // ------------------------------------------------------------------ create form: versions of the chosen model
  var modelSelect = document.querySelector("[data-deployment-form] select[name=model]");
  var versionSelect = document.querySelector("[data-deployment-form] select[name=model_version]");
  var versionModels = document.getElementById("version-models");
  if (modelSelect && versionSelect && versionModels) {
    var modelOf = JSON.parse(versionModels.textContent);
    var narrow = function () {
      var chosen = modelSelect.value;
      versionSelect.querySelectorAll("option").forEach(function (option) {
        if (!option.value) { return; }
        var show = !chosen || String(modelOf[option.value]) === chosen;
        option.hidden = !show;
        option.disabled = !show;
      });
      versionSelect.querySelectorAll("optgroup").forEach(function (group) {
        group.hidden = !group.querySelector("option:not([hidden])");
      });
      var current = versionSelect.selectedOptions[0];
      if (current && current.disabled) {
        var first = versionSelect.querySelector("option[value]:not([disabled]):not([value=''])");
        versionSelect.value = first ? first.value : "";
      }
    };
    modelSelect.addEventListener("change", narrow);
    versionSelect.addEventListener("change", function () {
      var model = modelOf[versionSelect.value];
      if (model && modelSelect.value && String(model) !== modelSelect.value) { modelSelect.value = String(model); }
    });
    narrow();
  }

  // ------------------------------------------------------------------ replica output: refresh every 5 s if asked
  var auto = document.querySelector("[data-auto-refresh]");
  if (auto) {
    var log = document.querySelector("[data-replica-log]");
    if (log) { log.scrollTop = log.scrollHeight; }
    var schedule = function () {
      if (!auto.checked) { return; }
      setTimeout(function () {
        if (auto.checked) { window.location.replace(window.location.pathname + "?auto=1"); }
      }, 5000);
    };
    auto.addEventListener("change", function () {
      if (auto.checked) { schedule(); } else { window.history.replaceState(null, "", window.location.pathname); }
    });
    schedule();
  }
})();
