// The alerts dashboard's live feed: subscribes to the server-sent events of new alerts (same origin, with the
// session cookie) and puts each one that matches the page's filters at the top of the table. Every value goes in
// with textContent, never as markup. Labels come from the page's hidden #alert-labels (no inline script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var table = document.getElementById("alerts");
  var body = document.getElementById("alerts-body");
  var live = document.getElementById("alert-live");
  if (!table || !body || !live || typeof window.EventSource !== "function") {
    return;
  }
  var labels = {};
  document.querySelectorAll("#alert-labels [data-k]").forEach(function (el) {
    labels[el.getAttribute("data-k")] = el.textContent;
  });
  function label(key, fallback) {
    return Object.prototype.hasOwnProperty.call(labels, key) ? labels[key] : fallback;
  }
  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  // In the organization's time zone (the table's data-tz), as the server-rendered rows are.
  function time(ms) {
    var d = new Date(ms);
    try {
      var parts = {};
      new Intl.DateTimeFormat("en-US", {
        timeZone: table.getAttribute("data-tz") || "UTC", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
      }).formatToParts(d).forEach(function (p) {
        parts[p.type] = p.value;
      });
      return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + " " +
        parts.timeZoneName;
    } catch (e) {
      return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
        pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
    }
  }
  function user(id) {
    return id === null || id === undefined ? "" : label("user." + id, "#" + id);
  }
  function cell(tag, text) {
    var el = document.createElement(tag);
    el.textContent = text;
    return el;
  }
  function matches(a) {
    var status = table.getAttribute("data-status");
    var rule = table.getAttribute("data-rule");
    var subject = table.getAttribute("data-subject");
    return (!status || a.status === status) && (!rule || a.rule === rule) &&
      (!subject || String(a.subject_id) === subject);
  }
  function add(a) {
    if (!a || typeof a.id !== "number" || !matches(a) || body.querySelector('tr[data-id="' + a.id + '"]')) {
      return;
    }
    var tr = document.createElement("tr");
    tr.className = "alert-row alert-new severity-" + String(a.severity).replace(/[^a-z]/g, "");
    tr.setAttribute("data-id", String(a.id));
    var th = document.createElement("th");
    th.setAttribute("scope", "row");
    var link = cell("a", String(a.id));
    link.setAttribute("href", "/app/alerts/" + a.id);
    th.appendChild(link);
    tr.appendChild(th);
    tr.appendChild(cell("td", time(a.created_at)));
    var rule = cell("td", label("rule." + a.rule, String(a.rule)));
    rule.className = "alert-rule";
    tr.appendChild(rule);
    tr.appendChild(cell("td", label("severity." + a.severity, String(a.severity))));
    var subject = a.subject_id !== null && a.subject_id !== undefined ? user(a.subject_id)
      : String(a.subject_key || "").replace(/^ip:/, "");
    tr.appendChild(cell("td", subject));
    var status = cell("td", label("status." + a.status, String(a.status)));
    status.className = "alert-status";
    tr.appendChild(status);
    tr.appendChild(cell("td", user(a.assignee_id)));
    body.insertBefore(tr, body.firstChild);
    var none = document.getElementById("alerts-none");
    if (none) {
      none.remove();
    }
  }
  var source = new window.EventSource("/api/v1/alerts/stream");
  source.addEventListener("open", function () {
    live.textContent = label("alerts.live_on", "");
    live.setAttribute("data-live", "on");
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself; say so meanwhile.
    live.textContent = label("alerts.live_off", "");
    live.setAttribute("data-live", "off");
  });
  source.addEventListener("alert", function (event) {
    try {
      add(JSON.parse(event.data));
    } catch (e) {
      // A malformed event is skipped; the next page load shows the list as stored.
    }
  });
  source.addEventListener("lagged", function () {
    live.textContent = label("alerts.live_lagged", "");
  });
});
