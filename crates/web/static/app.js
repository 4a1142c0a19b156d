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
