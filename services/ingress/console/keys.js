/* API keys page: create (the key is shown once), list and revoke (/v1/keys). */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t, el = dr.el, $ = dr.$;

  function row(k) {
    var revoke = el('button', { type: 'button', class: 'small danger', text: t('keys.revoke') });
    revoke.disabled = !!k.revoked;
    revoke.addEventListener('click', function () {
      if (!window.confirm(t('keys.revokeConfirm', { id: k.id })))
        return;
      dr.api('DELETE', '/v1/keys/' + encodeURIComponent(k.id)).then(function () {
        dr.ok(t('keys.revoked', { id: k.id }));
        load();
      }, dr.fail);
    });
    return el('tr', { 'data-key': k.id }, [
      el('td', { class: 'mono', text: String(k.id) }), el('td', { text: k.name || '' }), el('td', { text: k.scope }),
      el('td', { class: 'mono', text: k.device || '' }), el('td', { text: dr.fmtTime(k.createdAt) }),
      el('td', {}, [el('span', { class: 'badge ' + (k.revoked ? 'warn' : 'ok'),
                                 text: t(k.revoked ? 'keys.revokedState' : 'keys.active') })]),
      el('td', {}, [revoke])
    ]);
  }

  function load() {
    return dr.api('GET', '/v1/keys').then(function (r) {
      var tb = $('#keys');
      tb.replaceChildren();
      (r.body.keys || []).forEach(function (k) { tb.appendChild(row(k)); });
      if (!tb.children.length)
        dr.emptyRow(tb, 7);
    }, dr.fail);
  }

  $('#k-scope').addEventListener('change', function () {
    var dev = $('#k-scope').value === 'device';
    $('#k-device').disabled = !dev;
    if (!dev)
      $('#k-device').value = '';
  });

  $('#key-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var scope = $('#k-scope').value, dev = $('#k-device'), name = $('#k-name').value.trim();
    dev.removeAttribute('aria-invalid');
    var body = { scope: scope };
    if (scope === 'device') {
      if (!dev.value.trim()) {
        dev.setAttribute('aria-invalid', 'true');
        dev.focus();
        dr.fail(new Error(t('err.required') + ': ' + t('keys.device')));
        return;
      }
      body.device = dev.value.trim();
    }
    if (name)
      body.name = name;
    dr.api('POST', '/v1/keys', body).then(function (r) {
      $('#k-new').hidden = false;
      $('#k-secret').textContent = r.body.key;
      $('#k-secret').focus();
      $('#key-form').reset();
      $('#k-device').disabled = true;
      load();
    }, dr.fail);
  });

  $('#k-copy').addEventListener('click', function () {
    var s = $('#k-secret').textContent;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(s).then(function () { dr.ok(t('keys.copied')); }, dr.fail);
    } else {
      var range = document.createRange();
      range.selectNodeContents($('#k-secret'));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
    }
  });

  dr.start().then(load, function () {});
})();
