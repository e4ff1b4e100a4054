// The ferray dashboard's script: no build step, no library.
// - Sections marked data-live="MS" are refreshed: the page is fetched again
//   and each such section is replaced by the one with the same id.
// - A <pre data-log="URL"> follows a job's log: URL?from=N gives the lines
//   from N on and the next N.
// The session cookie goes with every request (same origin); the token is
// never in a URL or in this script.
(function () {
  'use strict';
  var stopped = false;

  function stop() {
    stopped = true;
    var bar = document.createElement('p');
    bar.className = 'error';
    bar.id = 'signed-out';
    bar.textContent = 'Signed out: reload the page to sign in again.';
    document.body.prepend(bar);
  }

  var live = document.querySelectorAll('[data-live]');
  if (live.length) {
    var every = 60000;
    live.forEach(function (el) {
      every = Math.min(every, parseInt(el.dataset.live, 10) || 2000);
    });
    var busy = false;
    setInterval(function () {
      if (stopped || busy || document.hidden) return;
      busy = true;
      fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then(function (r) {
          if (r.redirected || r.status === 401) { stop(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (text) {
          if (!text) return;
          var doc = new DOMParser().parseFromString(text, 'text/html');
          document.querySelectorAll('[data-live]').forEach(function (el) {
            var fresh = el.id && doc.getElementById(el.id);
            if (fresh) el.replaceWith(document.importNode(fresh, true));
          });
        })
        .catch(function () { /* the head may be restarting: try again */ })
        .finally(function () { busy = false; });
    }, every);
  }

  document.querySelectorAll('pre[data-log]').forEach(function (pre) {
    var from = 0;
    var url = pre.dataset.log;
    var busy = false;
    function poll() {
      if (stopped || busy) return;
      busy = true;
      fetch(url + '?from=' + from, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          if (r.status === 401) { stop(); return null; }
          if (r.status === 404) { clearInterval(timer); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (j) {
          if (!j) return;
          if (j.logs) {
            var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.appendChild(document.createTextNode(j.logs));
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
          if (typeof j.next === 'number') from = j.next;
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    }
    poll();
    var timer = setInterval(poll, 1000);
  });
})();
