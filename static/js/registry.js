// The registry pages' JavaScript: upload progress, Plotly figures (lineage graph, run comparisons), scan polling,
// and the run comparison picker. Every page works without it; this makes long work visible.
(function () {
  "use strict";

  function formatBytes(n) {
    if (n < 1024) { return n + " B"; }
    if (n < 1024 * 1024) { return (n / 1024).toFixed(1) + " KB"; }
    if (n < 1024 * 1024 * 1024) { return (n / 1024 / 1024).toFixed(1) + " MB"; }
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  // ------------------------------------------------------------------ upload with progress (XHR upload events)
  function bindUpload(form) {
    if (!form || form.dataset.bound) { return; }
    form.dataset.bound = "1";
    var fileInput = form.querySelector("input[type=file]");
    var box = form.querySelector("[data-upload-progress]");
    var bar = box.querySelector("progress");
    var text = box.querySelector("[data-upload-progress-text]");
    var submit = form.querySelector("[data-upload-submit]");
    var maxBytes = parseInt(fileInput.getAttribute("data-max-bytes") || "0", 10);

    function fileError(message) {
      var old = form.querySelector('[data-field-error="file"][data-client]');
      if (old) { old.remove(); }
      if (!message) { return; }
      var p = document.createElement("p");
      p.className = "field-error";
      p.setAttribute("data-field-error", "file");
      p.setAttribute("data-client", "1");
      p.textContent = message;
      fileInput.closest(".field").appendChild(p);
      fileInput.closest(".field").classList.add("has-error");
    }

    fileInput.addEventListener("change", function () { fileError(null); });

    form.addEventListener("submit", function (event) {
      var file = fileInput.files && fileInput.files[0];
      if (file && maxBytes && file.size > maxBytes) {
        event.preventDefault();
        fileError("This file is " + formatBytes(file.size) + "; the limit is " + formatBytes(maxBytes) + ".");
        return;
      }
      if (!window.FormData || !window.XMLHttpRequest) { return; } // a plain submit still works
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      var token = form.querySelector("[name=csrfmiddlewaretoken]");
      if (token) { xhr.setRequestHeader("X-CSRFToken", token.value); }
      box.hidden = false;
      submit.disabled = true;
      bar.value = 0;
      bar.max = 100;
      text.textContent = file ? "Uploading " + file.name + "…" : "Sending…";
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) { return; }
        var pct = Math.floor((e.loaded / e.total) * 100);
        bar.value = pct;
        box.setAttribute("data-percent", String(pct));
        text.textContent = "Uploaded " + formatBytes(e.loaded) + " of " + formatBytes(e.total) + " (" + pct + "%)";
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        box.setAttribute("data-percent", "100");
        bar.removeAttribute("value"); // indeterminate while the server checks and stores the file
        text.textContent = "Upload complete. Checking the file…";
        box.setAttribute("data-phase", "checking");
      });
      xhr.addEventListener("load", function () {
        var type = xhr.getResponseHeader("Content-Type") || "";
        if (xhr.status === 200 && type.indexOf("application/json") === 0) {
          window.location.assign(JSON.parse(xhr.responseText).redirect); // the upload's page
          return;
        }
        // The form again, with the errors next to their fields: swap the page's main content.
        var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var main = doc.querySelector("main");
        if (main) {
          document.querySelector("main").innerHTML = main.innerHTML;
          document.title = doc.title;
          bindUpload(document.querySelector("[data-upload-form]"));
        } else {
          box.hidden = true;
          submit.disabled = false;
          fileError("The server answered " + xhr.status + ". Try again.");
        }
      });
      xhr.addEventListener("error", function () {
        box.hidden = true;
        submit.disabled = false;
        fileError("The upload was interrupted: the connection closed (the file may be over the " +
                  formatBytes(maxBytes) + " limit, or the network dropped). Try again.");
      });
      xhr.send(new FormData(form));
    });
  }
  bindUpload(document.querySelector("[data-upload-form]"));

  // ------------------------------------------------------------------ Plotly figures from <script type=json>
  function drawFigures() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("[data-plotly-figure]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-plotly-figure"));
      if (!source) { return; }
      var figure = JSON.parse(source.textContent);
      if (el.hasAttribute("data-plotly-links") && el.clientWidth < 600) {
        // A phone: smaller node labels, and no edge labels (the facts below the graph say the same).
        figure.data.forEach(function (trace) {
          if (trace.mode === "text") { trace.visible = false; }
          if (trace.textfont) { trace.textfont.size = 10; }
        });
      }
      window.Plotly.newPlot(el, figure.data, figure.layout, {displayModeBar: false, responsive: true})
        .then(function () { el.setAttribute("data-rendered", "1"); });
      if (el.hasAttribute("data-plotly-links")) {
        el.on("plotly_click", function (data) {
          var url = data.points && data.points[0] && data.points[0].customdata;
          if (url) { window.location.assign(url); }
        });
      }
    });
  }
  if (document.querySelector("[data-plotly-figure]")) {
    if (window.Plotly) { drawFigures(); } else { window.addEventListener("load", drawFigures); }
  }

  // ------------------------------------------------------------------ work in a worker: poll, reload on change
  // The version page while its scan runs (data-scan-poll) and an upload's page while the worker registers it
  // (data-upload-poll): the element names the status URL and the state the page shows; a change reloads it.
  function pollUntilChanged(url, shown, stateOf, firstDelay, maxDelay) {
    var delay = firstDelay;
    var poll = function () {
      if (document.hidden) { setTimeout(poll, delay); return; }
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && stateOf(data) !== shown) { window.location.reload(); return; }
          delay = Math.min(delay * 1.5, maxDelay);
          setTimeout(poll, delay);
        })
        .catch(function () { setTimeout(poll, maxDelay); });
    };
    setTimeout(poll, delay);
  }
  var scan = document.querySelector("[data-scan-poll]");
  if (scan) {
    pollUntilChanged(scan.getAttribute("data-scan-poll"), scan.getAttribute("data-scan-state"),
                     function (d) { return d.status + ":" + (d.scan ? d.scan.status : ""); }, 2000, 15000);
  }
  var pendingUpload = document.querySelector("[data-upload-poll]");
  if (pendingUpload) {
    pollUntilChanged(pendingUpload.getAttribute("data-upload-poll"), pendingUpload.getAttribute("data-upload-state"),
                     function (d) { return d.status; }, 1000, 10000);
  }

  // ------------------------------------------------------------------ compare: between 2 and N runs
  var compare = document.querySelector("[data-compare-form]");
  if (compare) {
    var max = parseInt(compare.getAttribute("data-compare-max") || "10", 10);
    var button = compare.querySelector("[data-compare-button]");
    var hint = compare.querySelector("[data-compare-hint]");
    var update = function () {
      var n = compare.querySelectorAll("input[name=runs]:checked").length;
      button.disabled = n < 2 || n > max;
      hint.textContent = n < 2 ? "Tick 2 to " + max + " runs to compare them." :
        (n > max ? "At most " + max + " runs." : n + " runs selected.");
    };
    compare.addEventListener("change", update);
    update();
  }
})();
