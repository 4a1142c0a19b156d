// The UI's only script, loaded from our own origin (the CSP forbids inline code). Progressive: every page works
// without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Forms marked data-confirm ask before submitting (deactivate a user, save a role).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
  // Selects marked data-autosubmit submit their form when changed (sort order, page size).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) {
        select.form.submit();
      }
    });
  });
});
// CSV import: a chosen file is read into the form's text area (no upload of raw files, no multipart), so the
// import keeps the page's CSRF token and the server's error report can show the text again.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[type=file][data-fill]").forEach(function (input) {
    input.addEventListener("change", function () {
      var target = document.getElementById(input.getAttribute("data-fill"));
      var file = input.files && input.files[0];
      if (!target || !file) {
        return;
      }
      var box = document.getElementById("import-progress-box");
      var bar = document.getElementById("import-progress");
      var label = document.getElementById("import-progress-label");
      var reader = new FileReader();
      if (box && bar && label) {
        box.hidden = false;
        label.textContent = label.getAttribute("data-reading");
        bar.value = 0;
      }
      reader.onprogress = function (event) {
        if (bar && event.lengthComputable) {
          bar.value = Math.round((100 * event.loaded) / event.total);
        }
      };
      reader.onload = function () {
        target.value = String(reader.result);
        if (bar) {
          bar.value = 100;
        }
      };
      reader.readAsText(file);
    });
  });
  // While the import runs (one all-or-nothing request), the form shows how many rows it sends and an indeterminate
  // bar, and cannot be sent twice.
  var form = document.getElementById("import-form");
  if (form) {
    form.addEventListener("submit", function () {
      var text = document.getElementById("import-csv");
      var box = document.getElementById("import-progress-box");
      var bar = document.getElementById("import-progress");
      var label = document.getElementById("import-progress-label");
      var button = document.getElementById("import-submit");
      var rows = text ? Math.max(0, text.value.split(/\r?\n/).filter(function (l) { return l.trim() !== ""; }).length - 1) : 0;
      if (box && bar && label) {
        box.hidden = false;
        bar.removeAttribute("value");
        label.textContent = label.getAttribute("data-importing").replace("{n}", String(rows));
      }
      if (button) {
        button.disabled = true;
      }
    });
  }
});
