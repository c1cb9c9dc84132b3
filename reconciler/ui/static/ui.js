// reconciler web view: the page's only script (served from /ui/static; the CSP allows no inline script).
// Reading works without it. It does three things:
// 1. Live pages (<main data-live>) poll /ui/version every 2 s and, when the ledger moved,
//    fetch the same page and swap its <main> in place.
// 2. "x ago" texts (<time data-ago>) stay current between refreshes.
// 3. Approve / Decline send the API token from sessionStorage (this tab only) in the x-token
//    header to the API's approval route; a cookie never authorises a write.
(function () {
  "use strict";
  var TOKEN = "reconciler-api-token";
  var APPROVER = "reconciler-approver";
  var POLL_MS = 2000;

  function ago(iso) {
    var at = Date.parse(iso);
    if (isNaN(at)) return null;
    var s = (Date.now() - at) / 1000;
    if (s < 0) return "just now";
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s ago";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m ago";
    return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h ago";
  }

  function refreshAges() {
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      var text = ago(el.getAttribute("datetime"));
      if (text) el.textContent = text;
    });
  }

  function versionUrl(main) {
    return "/ui/version" + (main.dataset.liveUpstream ? "?upstream=1" : "");
  }

  function stamp(body) {
    return String(body.events) + "/" + String(body.upstream || "");
  }

  var seen = null;
  var busy = false;

  function typing(main) {
    var active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function poll() {
    var main = document.getElementById("main");
    if (!main || !main.dataset.live || busy || document.hidden) return;
    if (seen === null) seen = main.dataset.liveUpstream ? null : String(main.dataset.version) + "/";
    busy = true;
    var latest = null;
    fetch(versionUrl(main), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return null;
        latest = stamp(body);
        if (seen === null) seen = latest; // the upstream page: its first answer is what it shows
        if (latest === seen || typing(main)) return null; // a person typing keeps the page; next time
        return fetch(location.href, { credentials: "same-origin" }).then(function (r) {
          return r.ok ? r.text() : null;
        });
      })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        var current = document.getElementById("main");
        if (!fresh || !current) return;
        current.replaceWith(document.adoptNode(fresh));
        seen = latest;
        fillCredentials();
        refreshAges();
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }

  function rememberLoginToken() {
    var form = document.getElementById("login-form");
    if (!form) return;
    form.addEventListener("submit", function () {
      var field = document.getElementById("token");
      if (field && field.value) sessionStorage.setItem(TOKEN, field.value);
    });
  }

  function fillCredentials() {
    var token = document.getElementById("approval-token");
    if (token && !token.value) token.value = sessionStorage.getItem(TOKEN) || "";
    var who = document.getElementById("approver");
    if (who && !who.value) who.value = sessionStorage.getItem(APPROVER) || "";
  }

  function answer(button) {
    var card = button.closest("article.approval");
    var out = card.querySelector("output.answer");
    var tokenField = document.getElementById("approval-token");
    var whoField = document.getElementById("approver");
    var token = (tokenField && tokenField.value) || sessionStorage.getItem(TOKEN) || "";
    var who = (whoField && whoField.value.trim()) || "web view";
    if (tokenField && tokenField.value) sessionStorage.setItem(TOKEN, tokenField.value);
    if (whoField && whoField.value.trim()) sessionStorage.setItem(APPROVER, whoField.value.trim());
    var headers = { "content-type": "application/json" };
    if (token) headers["x-token"] = token;
    var message = card.querySelector(".approval-message");
    out.className = "answer";
    out.textContent = "sending…";
    fetch(card.dataset.api, {
      method: "POST",
      credentials: "omit",
      headers: headers,
      body: JSON.stringify({
        stage: card.dataset.stage,
        service: card.dataset.service,
        decision: button.dataset.decision,
        approver: who,
        message: message ? message.value : "",
      }),
    })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.ok) {
            var said = (button.dataset.decision === "approve" ? "approved" : "declined") + " " +
              card.dataset.stage + " of " + card.dataset.context + ": recorded";
            out.className = "answer recorded";
            out.textContent = said;
            var flash = document.getElementById("flash");
            if (flash) flash.textContent = said;
          } else {
            out.className = "answer " + (r.status === 401 ? "refused" : "failed");
            out.textContent = "refused (" + r.status + "): " + (body.message || r.statusText);
            if (r.status === 401) sessionStorage.removeItem(TOKEN);
          }
        });
      })
      .catch(function (err) {
        out.className = "answer failed";
        out.textContent = "not sent: " + err;
      });
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("article.approval button[data-decision]");
    if (button) {
      ev.preventDefault();
      answer(button);
    }
  });

  document.addEventListener("input", function (ev) {
    if (ev.target && ev.target.id === "approval-token") sessionStorage.setItem(TOKEN, ev.target.value);
    if (ev.target && ev.target.id === "approver") sessionStorage.setItem(APPROVER, ev.target.value.trim());
  });

  document.addEventListener("DOMContentLoaded", function () {
    rememberLoginToken();
    fillCredentials();
    refreshAges();
    setInterval(poll, POLL_MS);
    setInterval(refreshAges, 10000);
  });
})();
