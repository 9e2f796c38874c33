/* Drover console: what every page shares. The session is the drover_session cookie set by
 * POST /auth/login with "cookie": true (docs/console-api.md §1); the page keeps only the CSRF token,
 * which it sends as X-CSRF-Token on every write. Any 401 or 403 from the API ends the session view
 * and goes to the login page with ?reason=. Every API error is shown in the flash area. */
(function () {
  'use strict';

  var t = window.drI18n.t;
  var CSRF_STORE = 'droverConsoleCsrf';
  var csrf = null;
  try { csrf = sessionStorage.getItem(CSRF_STORE); } catch (e) { csrf = null; }

  function $(sel, root) { return (root || document).querySelector(sel); }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false)
          return;
        if (k === 'text')
          e.textContent = v;
        else if (k === 'class')
          e.className = v;
        else if (k.indexOf('on') === 0 && typeof v === 'function')
          e.addEventListener(k.slice(2), v);
        else
          e.setAttribute(k, v === true ? '' : String(v));
      });
    }
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined)
        e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return e;
  }

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split('; ') : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      if (parts[i].slice(0, eq) === name)
        return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  function setCsrf(v) {
    csrf = v || null;
    try {
      if (csrf)
        sessionStorage.setItem(CSRF_STORE, csrf);
      else
        sessionStorage.removeItem(CSRF_STORE);
    } catch (e) { /* the cookie still holds it */ }
  }

  function ApiError(status, message, body) {
    this.status = status;
    this.message = message;
    this.body = body;
  }
  ApiError.prototype = Object.create(Error.prototype);

  /* The text of an error answer: Duster's {message}, then {error} (a string), then Drover's v1
   * {error:{code,message}}, then the status line. */
  function errorText(status, statusText, body) {
    if (body && typeof body === 'object') {
      if (typeof body.message === 'string' && body.message)
        return body.message;
      if (body.error && typeof body.error === 'object' && body.error.message)
        return body.error.message + (body.error.code ? ' (' + body.error.code + ')' : '');
      if (typeof body.error === 'string' && body.error)
        return body.error;
    }
    if (typeof body === 'string' && body.trim())
      return body.trim().slice(0, 300);
    return status + ' ' + (statusText || '');
  }

  function toLogin(reason) {
    setCsrf(null);
    var u = 'login.html?reason=' + encodeURIComponent(reason);
    window.location.replace(u);
  }

  /* api(method, path[, body[, opts]]) resolves to {status, body, headers}. Rejects with an ApiError;
   * 401/403 leave the page for the login page unless opts.noRedirect. */
  function api(method, path, body, opts) {
    opts = opts || {};
    var headers = { Accept: 'application/json' };
    var init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined && body !== null) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD') {
      /* a new attempt at a change replaces the errors of the earlier ones */
      document.querySelectorAll('#flash .flash.error').forEach(function (x) { x.remove(); });
      var token = csrf || readCookie('drover_csrf');
      if (token)
        headers['X-CSRF-Token'] = token;
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var parsed = null;
        if (text) {
          try { parsed = JSON.parse(text); } catch (e) { parsed = text; }
        }
        if (res.ok)
          return { status: res.status, body: parsed, headers: res.headers };
        if ((res.status === 401 || res.status === 403) && !opts.noRedirect) {
          toLogin(res.status === 401 ? 'expired' : 'forbidden');
          /* the page is going away; keep callers from showing a stale error meanwhile */
          return new Promise(function () {});
        }
        throw new ApiError(res.status, errorText(res.status, res.statusText, parsed), parsed);
      });
    }, function (e) {
      throw new ApiError(0, t('err.network', { msg: e && e.message ? e.message : String(e) }), null);
    });
  }

  /* ---- flash messages: OK ones hide after 3.5 s, errors stay until closed ---------------------- */

  function flash(kind, text) {
    var box = $('#flash');
    if (!box)
      return;
    var close = el('button', { type: 'button', class: 'small', 'aria-label': t('common.close'), text: '×' });
    var item = el('div', { class: 'flash ' + kind, role: kind === 'error' ? 'alert' : 'status' },
                  [el('span', { text: text }), close]);
    close.addEventListener('click', function () { item.remove(); });
    box.appendChild(item);
    if (kind === 'ok')
      setTimeout(function () { item.remove(); }, 3500);
  }
  function ok(text) { flash('ok', text); }
  function fail(err) {
    flash('error', err && err.message ? err.message : String(err));
  }

  /* ---- formatting ------------------------------------------------------------------------------ */

  var STATUS_CLASS = {
    DELIVERED: 'ok', COMPLETED: 'ok',
    NOT_DELIVERED: 'bad', FAILED: 'bad',
    COMPLETED_WITH_ERROR: 'warn', CANCELLED: 'warn', EXPIRED: 'warn', PURGED: 'warn'
  };
  /* Statuses after which nothing changes any more (DELIVERED is not one: a COMPLETED may follow). */
  var FINAL = ['COMPLETED', 'COMPLETED_WITH_ERROR', 'CANCELLED', 'UNKNOWN', 'EXPIRED', 'FAILED', 'PURGED'];

  function badge(status) {
    return el('span', { class: 'badge ' + (STATUS_CLASS[status] || ''), 'data-status': status, text: status });
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined || ms === '')
      return '—';
    var d = new Date(Number(ms));
    if (isNaN(d.getTime()))
      return '—';
    return d.toLocaleString(window.drI18n.lang === 'ru' ? 'ru-RU' : 'en-GB');
  }

  function truncate(s, n) {
    s = String(s);
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }

  function dataCell(data, n) {
    if (data === null || data === undefined)
      return el('td', { class: 'mono', text: '—' });
    var full = typeof data === 'string' ? data : JSON.stringify(data);
    return el('td', { class: 'mono', title: full, text: truncate(full, n) });
  }

  /* Parses a textarea that must hold a JSON object (or be blank: null). Marks the field and
   * throws an Error with the text to show when it is not. */
  function parseDataObject(textarea) {
    var s = textarea.value.trim();
    textarea.removeAttribute('aria-invalid');
    if (!s)
      return null;
    var v;
    try {
      v = JSON.parse(s);
    } catch (e) {
      textarea.setAttribute('aria-invalid', 'true');
      throw new Error(t('err.jsonObject') + ' — ' + e.message);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      textarea.setAttribute('aria-invalid', 'true');
      throw new Error(t('err.jsonObject'));
    }
    return v;
  }

  /* An optional whole-number field: undefined when blank. */
  function optInt(input, min, max) {
    var s = input.value.trim();
    input.removeAttribute('aria-invalid');
    if (!s)
      return undefined;
    if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      throw new Error((input.labels && input.labels[0] ? input.labels[0].firstChild.textContent + ': ' : '') +
                      t('err.number', { min: min, max: max }));
    }
    return Number(s);
  }

  /* Makes a table row act as a button: click, Enter and Space call fn. */
  function rowAction(tr, fn, label) {
    tr.classList.add('clickable');
    tr.tabIndex = 0;
    if (label)
      tr.setAttribute('aria-label', label);
    tr.addEventListener('click', function (e) {
      if (e.target.closest('button, a, input, select, textarea'))
        return;
      fn();
    });
    tr.addEventListener('keydown', function (e) {
      if (e.target !== tr)
        return;
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        fn();
      }
    });
  }

  function emptyRow(tbody, cols, text) {
    tbody.replaceChildren(el('tr', {}, [el('td', { class: 'empty', colspan: cols, text: text || t('common.none') })]));
  }

  /* ---- header, navigation and the session check ------------------------------------------------- */

  var PAGES = [
    ['devices.html', 'nav.devices'],
    ['messages.html', 'nav.messages'],
    ['saved-messages.html', 'nav.saved'],
    ['dashboard.html', 'nav.dashboard'],
    ['keys.html', 'nav.keys']
  ];

  function langSwitch() {
    var sel = el('select', { id: 'lang', 'aria-label': t('lang.label') });
    window.drI18n.supported.forEach(function (l) {
      var o = el('option', { value: l, text: l.toUpperCase() });
      if (l === window.drI18n.lang)
        o.selected = true;
      sel.appendChild(o);
    });
    sel.addEventListener('change', function () { window.drI18n.set(sel.value); });
    return sel;
  }

  function header(me) {
    var here = window.location.pathname.split('/').pop();
    var nav = el('nav', { class: 'main', 'aria-label': t('app.title') });
    PAGES.forEach(function (p) {
      nav.appendChild(el('a', { href: p[0], 'aria-current': here === p[0] ? 'page' : null, text: t(p[1]) }));
    });
    nav.appendChild(el('a', { href: '/swagger-ui.html', text: t('nav.api') }));
    var out = el('button', { type: 'button', id: 'signout', class: 'small', text: t('btn.signOut') });
    out.addEventListener('click', signOut);
    var h = el('header', { class: 'top' }, [
      el('a', { href: '#main', class: 'skip', text: t('nav.skip') }),
      el('div', { class: 'row1' }, [
        el('h1', { text: t('app.title') }),
        langSwitch(),
        me ? el('span', { class: 'who', id: 'who', text: t('who.signedIn', { id: me.deviseId, role: me.role }) }) : null,
        me ? out : null
      ]),
      el('p', { class: 'subtitle', text: t('app.subtitle') }),
      me ? nav : null
    ]);
    document.body.insertBefore(h, document.body.firstChild);
  }

  function signOut() {
    api('POST', '/auth/logout', null, { noRedirect: true }).then(function () {
      toLogin('logout');
    }, function (e) {
      /* the session is unusable either way; the login page shows why */
      fail(e);
      toLogin('logout');
    });
  }

  /* Every page but the login page: check the session (GET /auth/me) and draw the header. A role other
   * than MAN is sent back to the login page. Resolves to the /auth/me answer. */
  function start() {
    window.drI18n.apply();
    return api('GET', '/auth/me', null, { noRedirect: true }).then(function (r) {
      var me = r.body || {};
      if (me.role !== 'MAN') {
        toLogin('forbidden');
        return new Promise(function () {});
      }
      if (me.csrfToken)
        setCsrf(me.csrfToken);
      header(me);
      return me;
    }, function (e) {
      if (e.status === 401 || e.status === 403) {
        toLogin(e.status === 401 ? 'expired' : 'forbidden');
        return new Promise(function () {});
      }
      header(null);
      fail(e);
      throw e;
    });
  }

  /* ---- following one message live (GET /v1/events with the session cookie) ----------------------
   * The stream is opened first and the message read once it is open, so no change between the two is
   * missed. onStatus(status, ts) is called for the current status and each change; it stops by itself
   * at a final status. Returns a function that stops following. */
  function follow(id, device, onStatus, onState) {
    var es = null, stopped = false, last = null;
    onState = onState || function () {};
    function seen(status, ts) {
      if (stopped || status === last)
        return;
      last = status;
      onStatus(status, ts);
      if (FINAL.indexOf(status) >= 0) {
        stop();
        onState('final');
      }
    }
    function stop() {
      stopped = true;
      if (es)
        es.close();
    }
    es = new EventSource('/v1/events?device=' + encodeURIComponent(device));
    var first = true;
    es.addEventListener('open', function () {
      if (!first)
        onState('live');
      first = false;
      /* read it (again) after every (re)connect: changes while disconnected are caught up here */
      api('GET', '/v1/messages/' + id).then(function (r) {
        var h = r.body.history || [];
        h.forEach(function (x) { if (x.status !== last) seen(x.status, x.ts); });
        seen(r.body.status, r.body.updatedAt);
      }, function (e) { fail(e); });
    });
    es.addEventListener('status', function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (Number(d.id) === Number(id))
        seen(d.status, d.ts);
    });
    es.addEventListener('error', function () {
      if (stopped)
        return;
      onState('lost');
      if (es.readyState === EventSource.CLOSED) {
        /* the server refused the stream: a 401/403 from /auth/me sends us to the login page */
        api('GET', '/auth/me').then(function () {
          fail(new Error(t('msg.liveLost')));
        }, fail);
      }
    });
    return stop;
  }

  window.dr = {
    $: $, el: el, api: api, ApiError: ApiError, ok: ok, fail: fail, badge: badge, fmtTime: fmtTime,
    truncate: truncate, dataCell: dataCell, parseDataObject: parseDataObject, optInt: optInt,
    rowAction: rowAction, emptyRow: emptyRow, start: start, header: header, setCsrf: setCsrf,
    FINAL: FINAL, t: t, follow: follow
  };
})();
