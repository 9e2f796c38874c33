/* Login page: POST /auth/login with "cookie": true. Only MAN may enter (as Duster's console); any
 * other role is logged out again at once so no unusable session is left behind. */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t;

  window.drI18n.apply();
  dr.header(null);

  var reason = new URLSearchParams(window.location.search).get('reason');
  var REASONS = { expired: 'login.reason.expired', forbidden: 'login.reason.forbidden', logout: 'login.reason.logout' };
  if (reason && REASONS[reason]) {
    dr.$('#flash').appendChild(dr.el('div', { class: 'flash ' + (reason === 'logout' ? 'ok' : 'error'), role: 'status',
                                              id: 'reason', text: t(REASONS[reason]) }));
  }

  function next() {
    var lang = new URLSearchParams(window.location.search).get('lang');
    window.location.replace('devices.html' + (lang ? '?lang=' + encodeURIComponent(lang) : ''));
  }

  /* A still valid MAN session goes straight on. */
  if (!reason || reason === 'logout') {
    dr.api('GET', '/auth/me', null, { noRedirect: true }).then(function (r) {
      if (r.body && r.body.role === 'MAN')
        next();
    }, function () { /* not signed in: stay here */ });
  }

  var form = dr.$('#login-form');
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    var id = dr.$('#deviseId'), pw = dr.$('#password');
    [id, pw].forEach(function (f) { f.removeAttribute('aria-invalid'); });
    if (!id.value.trim() || !pw.value) {
      var missing = !id.value.trim() ? id : pw;
      missing.setAttribute('aria-invalid', 'true');
      missing.focus();
      dr.fail(new Error(t('err.required') + ': ' + missing.labels[0].textContent.trim()));
      return;
    }
    var btn = dr.$('#login-submit');
    btn.disabled = true;
    dr.api('POST', '/auth/login', { deviseId: id.value.trim(), password: pw.value, cookie: true }, { noRedirect: true })
      .then(function (r) {
        var b = r.body || {};
        if (b.role !== 'MAN') {
          dr.setCsrf(b.csrfToken);
          dr.api('POST', '/auth/logout', null, { noRedirect: true }).catch(function () {});
          dr.setCsrf(null);
          throw new Error(t('login.onlyMan'));
        }
        dr.setCsrf(b.csrfToken);
        next();
      })
      .catch(function (err) {
        dr.fail(err);
        pw.value = '';
        pw.focus();
      })
      .finally(function () { btn.disabled = false; });
  });
})();
