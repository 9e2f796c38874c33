/* Devices page: Duster's clients form and table (/admin/api/clients) and Drover's fleet view
 * (GET /v1/devices): queue depth, in flight, last send and ack, per-device pacing, purge, and the
 * device's saved commands with one-click send. */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t, el = dr.el, $ = dr.$;
  var editing = null; /* the client being edited, or null when creating */
  var devAfter = null, clientsAfter = null, current = null;

  function enc(s) { return encodeURIComponent(s); }

  /* ---- clients ---------------------------------------------------------------------------------- */

  function resetForm() {
    editing = null;
    $('#client-form').reset();
    $('#c-devise').disabled = false;
    $('#client-form-title').textContent = t('dev.form.create');
    $('#c-submit').textContent = t('common.create');
  }

  function editClient(c) {
    editing = c;
    $('#c-devise').value = c.deviseId;
    $('#c-devise').disabled = true;
    $('#c-password').value = '';
    $('#c-role').value = c.role;
    $('#c-description').value = c.description || '';
    $('#c-enabled').checked = c.enabled !== false;
    $('#client-form-title').textContent = t('dev.form.edit', { id: c.deviseId });
    $('#c-submit').textContent = t('common.save');
    $('#c-password').focus();
  }

  function clientRow(c) {
    var edit = el('button', { type: 'button', class: 'small', text: t('common.edit') });
    var del = el('button', { type: 'button', class: 'small danger', text: t('common.delete') });
    edit.addEventListener('click', function () { editClient(c); });
    del.addEventListener('click', function () {
      if (!window.confirm(t('common.confirmDelete', { what: c.deviseId })))
        return;
      dr.api('DELETE', '/admin/api/clients/' + c.id).then(function () {
        dr.ok(t('dev.deleted', { id: c.deviseId }));
        loadClients(true);
        loadDevices(true);
      }, dr.fail);
    });
    return el('tr', { 'data-client': c.deviseId }, [
      el('td', { text: String(c.id) }), el('td', { class: 'mono', text: c.deviseId }), el('td', { text: '••••••••' }),
      el('td', {}, [el('span', { class: 'badge ' + (c.role === 'MAN' ? 'info' : ''), text: c.role })]),
      el('td', { text: c.description || '' }), el('td', { text: c.enabled === false ? t('common.no') : t('common.yes') }),
      el('td', {}, [edit, ' ', del])
    ]);
  }

  function loadClients(fresh) {
    if (fresh)
      clientsAfter = null;
    var q = '/admin/api/clients?limit=200' + (clientsAfter ? '&after=' + enc(clientsAfter) : '');
    return dr.api('GET', q).then(function (r) {
      var tb = $('#clients');
      if (fresh)
        tb.replaceChildren();
      (r.body || []).forEach(function (c) { tb.appendChild(clientRow(c)); });
      if (!tb.children.length)
        dr.emptyRow(tb, 7);
      clientsAfter = r.headers.get('X-Next-After');
      $('#clients-more').hidden = !clientsAfter;
    }, dr.fail);
  }

  $('#clients-more').addEventListener('click', function () { loadClients(false); });
  $('#c-reset').addEventListener('click', resetForm);
  $('#client-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var id = $('#c-devise'), pw = $('#c-password'), desc = $('#c-description');
    [id, pw, desc].forEach(function (f) { f.removeAttribute('aria-invalid'); });
    var missing = !editing && !id.value.trim() ? id : (!editing && !pw.value ? pw : (!desc.value.trim() ? desc : null));
    if (missing) {
      missing.setAttribute('aria-invalid', 'true');
      missing.focus();
      dr.fail(new Error(t('err.required') + ': ' + missing.labels[0].textContent.trim()));
      return;
    }
    var body = { role: $('#c-role').value, description: desc.value.trim(), enabled: $('#c-enabled').checked };
    var req;
    if (editing) {
      if (pw.value)
        body.password = pw.value;
      req = dr.api('PUT', '/admin/api/clients/' + editing.id, body);
    } else {
      body.deviseId = id.value.trim();
      body.password = pw.value;
      req = dr.api('POST', '/admin/api/clients', body);
    }
    var name = editing ? editing.deviseId : body.deviseId;
    req.then(function () {
      dr.ok(t(editing ? 'dev.saved' : 'dev.created', { id: name }));
      resetForm();
      loadClients(true);
      loadDevices(true);
    }, dr.fail);
  });

  /* ---- fleet view ------------------------------------------------------------------------------- */

  function online(d) {
    if (d.online === true)
      return el('span', { class: 'badge ok', text: t('online.yes') });
    if (d.online === false)
      return el('span', { class: 'badge', text: t('online.no') });
    return document.createTextNode(t('online.unknown'));
  }

  function deviceRow(d) {
    var tr = el('tr', { 'data-device': d.device }, [
      el('td', { class: 'mono', text: d.device }), el('td', { text: d.description || '' }),
      el('td', { text: String(d.queued) }), el('td', { text: String(d.inFlight) }),
      el('td', { text: dr.fmtTime(d.lastSendAt) }), el('td', { text: dr.fmtTime(d.lastAckAt) }),
      el('td', {}, [online(d)])
    ]);
    dr.rowAction(tr, function () { openDevice(d.device, tr); }, d.device);
    return tr;
  }

  function loadDevices(fresh) {
    if (fresh)
      devAfter = null;
    var prefix = $('#dev-search').value.trim();
    var q = '/v1/devices?limit=100' + (prefix ? '&prefix=' + enc(prefix) : '') + (devAfter ? '&after=' + enc(devAfter) : '');
    return dr.api('GET', q).then(function (r) {
      var tb = $('#devices');
      if (fresh)
        tb.replaceChildren();
      (r.body.devices || []).forEach(function (d) { tb.appendChild(deviceRow(d)); });
      if (!tb.children.length)
        dr.emptyRow(tb, 7);
      devAfter = r.body.nextAfter;
      $('#dev-more').hidden = !devAfter;
    }, dr.fail);
  }

  $('#dev-search-form').addEventListener('submit', function (e) {
    e.preventDefault();
    loadDevices(true);
  });
  $('#dev-more').addEventListener('click', function () { loadDevices(false); });

  function kv(dl, key, value) {
    dl.appendChild(el('dt', { text: t(key) }));
    dl.appendChild(el('dd', { text: value }));
  }

  function openDevice(dev, tr) {
    document.querySelectorAll('#devices tr.selected').forEach(function (x) { x.classList.remove('selected'); });
    if (tr)
      tr.classList.add('selected');
    current = dev;
    return Promise.all([
      dr.api('GET', '/v1/devices/' + enc(dev)),
      dr.api('GET', '/admin/api/saved-messages?deviseId=' + enc(dev))
    ]).then(function (rs) {
      var d = rs[0].body;
      $('#detail-title').textContent = t('dev.details', { id: dev });
      $('#detail-hint').hidden = true;
      $('#detail-body').hidden = false;
      var dl = $('#detail-kv');
      dl.replaceChildren();
      kv(dl, 'dev.col.queued', String(d.queued));
      kv(dl, 'dev.col.inFlight', String(d.inFlight));
      kv(dl, 'dev.scheduled', String(d.scheduled));
      kv(dl, 'dev.nextSend', dr.fmtTime(d.nextSendAllowedAt));
      kv(dl, 'dev.col.lastSent', dr.fmtTime(d.lastSentAt));
      kv(dl, 'dev.col.lastAck', dr.fmtTime(d.lastAckAt));
      kv(dl, 'dev.shard', String(d.shard));
      $('#p-interval').value = d.intervalMs;
      $('#p-window').value = d.window;
      $('#p-mode').value = d.mode === 'pull' ? 'pull' : 'mqtt';
      var tb = $('#dev-saved');
      tb.replaceChildren();
      (rs[1].body || []).forEach(function (s) {
        var send = el('button', { type: 'button', class: 'small primary', text: t('common.send') });
        send.addEventListener('click', function () {
          dr.api('POST', '/admin/api/saved-messages/' + s.id + '/send').then(function (r) {
            dr.ok(t('saved.sent', { id: r.body.id }));
            openDevice(dev);
          }, dr.fail);
        });
        tb.appendChild(el('tr', {}, [el('td', { text: String(s.id) }), el('td', { text: s.description }),
                                     el('td', { class: 'mono', text: s.command }), el('td', {}, [send])]));
      });
      if (!tb.children.length)
        dr.emptyRow(tb, 4);
    }, dr.fail);
  }

  $('#pacing-form').addEventListener('submit', function (e) {
    e.preventDefault();
    if (!current)
      return;
    var body;
    try {
      body = { intervalMs: dr.optInt($('#p-interval'), 0, 86400000), window: dr.optInt($('#p-window'), 1, 64),
               mode: $('#p-mode').value };
    } catch (err) {
      dr.fail(err);
      return;
    }
    var dev = current;
    dr.api('PUT', '/v1/devices/' + enc(dev) + '/pacing', body).then(function () {
      dr.ok(t('dev.pacingSaved', { id: dev }));
      openDevice(dev);
    }, dr.fail);
  });

  $('#purge').addEventListener('click', function () {
    var dev = current;
    if (!dev || !window.confirm(t('dev.purgeConfirm', { id: dev })))
      return;
    dr.api('DELETE', '/v1/devices/' + enc(dev) + '/messages').then(function (r) {
      dr.ok(t('dev.purged', { id: dev, n: r.body && r.body.purged !== undefined ? r.body.purged : '?' }));
      openDevice(dev);
      loadDevices(true);
    }, dr.fail);
  });

  dr.start().then(function () {
    loadClients(true);
    loadDevices(true);
  }, function () {});
})();
