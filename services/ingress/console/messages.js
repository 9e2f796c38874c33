/* Messages page: the send form (POST /v1/devices/{dev}/messages) with its live status panel, the
 * fleet-wide history (GET /v1/messages, cursor paging), and one message with its timeline, cancel and
 * send-again. */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t, el = dr.el, $ = dr.$;
  var stopLive = null, shown = null;
  var cursors = [null], page = 0, nextCursor = null;

  function enc(s) { return encodeURIComponent(s); }

  function localMs(input) {
    if (!input.value)
      return undefined;
    var ms = new Date(input.value).getTime();
    return isNaN(ms) ? undefined : ms;
  }

  /* ---- the device list of the send form ------------------------------------------------------- */

  function ensureDevice(dev) {
    var sel = $('#s-device');
    for (var i = 0; i < sel.options.length; i++) {
      if (sel.options[i].value === dev) {
        sel.value = dev;
        return;
      }
    }
    var o = el('option', { value: dev, text: t('msg.fromHistory', { id: dev }) });
    sel.appendChild(o);
    sel.disabled = false;
    sel.value = dev;
  }

  function loadDevices() {
    return dr.api('GET', '/admin/api/clients?limit=1000').then(function (r) {
      var sel = $('#s-device');
      sel.replaceChildren();
      (r.body || []).filter(function (c) { return c.role === 'DEVISE'; }).forEach(function (c) {
        sel.appendChild(el('option', { value: c.deviseId, text: c.deviseId + (c.description ? ' — ' + c.description : '') }));
      });
      if (!sel.options.length)
        sel.appendChild(el('option', { value: '', text: t('msg.noDevices') }));
      var want = new URLSearchParams(window.location.search).get('device');
      if (want)
        ensureDevice(want);
    }, dr.fail);
  }

  /* ---- sending and following ------------------------------------------------------------------ */

  function liveStart(id, dev) {
    if (stopLive)
      stopLive();
    $('#live').hidden = false;
    $('#live-id').textContent = String(id);
    $('#live-text').textContent = t('msg.liveWaiting', { id: id });
    $('#live-status').replaceChildren();
    $('#live-timeline').replaceChildren();
    $('#live-stop').disabled = false;
    stopLive = dr.follow(id, dev, function (status, ts) {
      $('#live-status').replaceChildren(dr.badge(status));
      $('#live-timeline').appendChild(el('li', {}, [dr.fmtTime(ts), ' ', dr.badge(status)]));
    }, function (state) {
      if (state === 'final') {
        $('#live-text').textContent = t('msg.liveFinal');
        $('#live-stop').disabled = true;
        stopLive = null;
        loadHistory();
      } else if (state === 'lost') {
        $('#live-text').textContent = t('msg.liveLost');
      } else if (state === 'live') {
        $('#live-text').textContent = t('msg.liveWaiting', { id: id });
      }
    });
  }

  $('#live-stop').addEventListener('click', function () {
    if (stopLive)
      stopLive();
    stopLive = null;
    $('#live-text').textContent = t('msg.liveStopped');
    $('#live-stop').disabled = true;
  });

  function submit(dev, body) {
    return dr.api('POST', '/v1/devices/' + enc(dev) + '/messages', body).then(function (r) {
      dr.ok(t('msg.created', { id: r.body.id }));
      liveStart(r.body.id, dev);
      loadHistory();
      return r.body;
    });
  }

  $('#send-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var dev = $('#s-device').value, cmd = $('#s-command');
    cmd.removeAttribute('aria-invalid');
    var body;
    try {
      if (!dev)
        throw new Error(t('msg.noDevices'));
      if (!cmd.value.trim()) {
        cmd.setAttribute('aria-invalid', 'true');
        cmd.focus();
        throw new Error(t('err.required') + ': ' + t('msg.command'));
      }
      body = { believerGuarantee: $('#s-guarantee').value, command: cmd.value.trim(),
               data: dr.parseDataObject($('#s-data')) };
      var ttl = dr.optInt($('#s-ttl'), 1, 315360000000), max = dr.optInt($('#s-max'), 1, 1000000);
      var nb = localMs($('#s-notbefore'));
      if (ttl !== undefined)
        body.ttlMs = ttl;
      if (max !== undefined)
        body.maxAttempts = max;
      if (nb !== undefined)
        body.notBefore = nb;
    } catch (err) {
      dr.fail(err);
      return;
    }
    var btn = $('#s-submit');
    btn.disabled = true;
    submit(dev, body).catch(dr.fail).finally(function () { btn.disabled = false; });
  });

  /* ---- history ---------------------------------------------------------------------------------- */

  function historyRow(m) {
    var tr = el('tr', { 'data-id': m.id }, [
      el('td', { class: 'mono', text: String(m.id) }), el('td', { class: 'mono', text: m.device }),
      el('td', { class: 'mono', text: m.command }), el('td', {}, [dr.badge(m.status)]),
      el('td', { text: m.believerGuarantee || '' }), el('td', { text: dr.fmtTime(m.acceptedAt) }),
      el('td', { text: dr.fmtTime(m.changedAt) }), el('td', { text: String(m.attempts) })
    ]);
    dr.rowAction(tr, function () { openMessage(m.id); }, t('msg.detail', { id: m.id }));
    return tr;
  }

  function query() {
    var q = ['limit=' + $('#f-limit').value];
    var dev = $('#f-device').value.trim(), st = $('#f-status').value, cmd = $('#f-command').value.trim();
    var from = localMs($('#f-from')), to = localMs($('#f-to'));
    if (dev)
      q.push('device=' + enc(dev));
    if (st)
      q.push('status=' + enc(st));
    if (cmd)
      q.push('command=' + enc(cmd));
    if (from !== undefined)
      q.push('from=' + from);
    if (to !== undefined)
      q.push('to=' + to);
    if (cursors[page])
      q.push('cursor=' + enc(cursors[page]));
    return '/v1/messages?' + q.join('&');
  }

  function loadHistory() {
    return dr.api('GET', query()).then(function (r) {
      var tb = $('#history');
      tb.replaceChildren();
      (r.body.messages || []).forEach(function (m) { tb.appendChild(historyRow(m)); });
      if (!tb.children.length)
        dr.emptyRow(tb, 8);
      nextCursor = r.body.nextCursor;
      $('#h-next').disabled = !nextCursor;
      $('#h-prev').disabled = page === 0;
      $('#h-page').textContent = t('msg.page', { n: page + 1 });
    }, dr.fail);
  }

  $('#filter-form').addEventListener('submit', function (e) {
    e.preventDefault();
    cursors = [null];
    page = 0;
    loadHistory();
  });
  $('#h-next').addEventListener('click', function () {
    if (!nextCursor)
      return;
    cursors[page + 1] = nextCursor;
    page++;
    loadHistory();
  });
  $('#h-prev').addEventListener('click', function () {
    if (page > 0) {
      page--;
      loadHistory();
    }
  });

  /* ---- one message ------------------------------------------------------------------------------ */

  function kv(dl, key, value) {
    dl.appendChild(el('dt', { text: key }));
    dl.appendChild(el('dd', {}, [typeof value === 'string' ? document.createTextNode(value) : value]));
  }

  function openMessage(id) {
    return dr.api('GET', '/v1/messages/' + enc(id)).then(function (r) {
      var m = r.body;
      shown = m;
      var box = $('#detail');
      box.hidden = false;
      $('#detail-title').textContent = t('msg.detail', { id: m.id });
      var dl = $('#detail-kv');
      dl.replaceChildren();
      kv(dl, t('msg.col.device'), m.device);
      kv(dl, t('msg.col.status'), dr.badge(m.status));
      kv(dl, t('msg.col.command'), m.command);
      kv(dl, t('msg.col.guarantee'), m.guarantee);
      kv(dl, t('msg.col.attempts'), String(m.attempts));
      kv(dl, t('msg.col.created'), dr.fmtTime(m.createdAt));
      kv(dl, t('msg.col.updated'), dr.fmtTime(m.updatedAt));
      kv(dl, t('msg.col.data'), el('span', { class: 'mono', text: m.data === null ? '—' : JSON.stringify(m.data) }));
      var ol = $('#detail-timeline');
      ol.replaceChildren();
      (m.history || []).forEach(function (h) {
        ol.appendChild(el('li', {}, [dr.fmtTime(h.ts), ' ', dr.badge(h.status), ' ', h.event,
                                     h.attempt ? ' #' + h.attempt : '']));
      });
      $('#d-cancel').hidden = m.status !== 'NOT_DELIVERED';
      box.focus();
    }, dr.fail);
  }

  $('#d-close').addEventListener('click', function () {
    $('#detail').hidden = true;
    shown = null;
    var row = document.querySelector('#history tr[data-id]');
    if (row)
      row.focus();
  });

  $('#d-cancel').addEventListener('click', function () {
    if (!shown || !window.confirm(t('msg.cancelConfirm', { id: shown.id })))
      return;
    var id = shown.id;
    dr.api('POST', '/v1/messages/' + id + '/cancel').then(function () {
      dr.ok(t('msg.cancelled', { id: id }));
      openMessage(id);
      loadHistory();
    }, dr.fail);
  });

  $('#d-resend').addEventListener('click', function () {
    if (!shown)
      return;
    var body = { believerGuarantee: shown.guarantee, command: shown.command, data: shown.data };
    ensureDevice(shown.device);
    submit(shown.device, body).catch(dr.fail);
  });

  dr.start().then(function () {
    loadDevices();
    loadHistory();
    var open = new URLSearchParams(window.location.search).get('id');
    if (open)
      openMessage(open);
  }, function () {});
})();
