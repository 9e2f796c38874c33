/* Saved commands page: create, edit and delete saved commands (/admin/api/saved-messages), send one
 * to its owner with one click and follow its status live, and send one to many devices as a rollout
 * (POST /v1/rollouts) with live progress by outcome, pause, resume and cancel. */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t, el = dr.el, $ = dr.$;
  var editing = null, stopLive = null, saved = [], rollout = null, rolloutTimer = null;

  function enc(s) { return encodeURIComponent(s); }

  /* ---- owners ------------------------------------------------------------------------------------ */

  function loadOwners() {
    return dr.api('GET', '/admin/api/clients?limit=1000').then(function (r) {
      var devs = (r.body || []).filter(function (c) { return c.role === 'DEVISE'; });
      var sel = $('#sv-owner'), filter = $('#sv-filter');
      sel.replaceChildren();
      filter.replaceChildren(el('option', { value: '', text: t('saved.anyOwner') }));
      devs.forEach(function (c) {
        var label = c.deviseId + (c.description ? ' — ' + c.description : '');
        sel.appendChild(el('option', { value: String(c.id), text: label }));
        filter.appendChild(el('option', { value: c.deviseId, text: c.deviseId }));
      });
      if (!devs.length)
        sel.appendChild(el('option', { value: '', text: t('msg.noDevices') }));
    }, dr.fail);
  }

  /* ---- the list ---------------------------------------------------------------------------------- */

  function resetForm() {
    editing = null;
    $('#saved-form').reset();
    $('#sv-owner').disabled = false;
    $('#saved-form-title').textContent = t('saved.form.create');
    $('#sv-submit').textContent = t('common.create');
  }

  function edit(s) {
    editing = s;
    $('#sv-owner').value = String(s.clientId);
    $('#sv-guarantee').value = s.deliveryGuarantee;
    $('#sv-description').value = s.description;
    $('#sv-command').value = s.command;
    $('#sv-data').value = s.data === null || s.data === undefined ? '' : JSON.stringify(s.data, null, 2);
    $('#saved-form-title').textContent = t('saved.form.edit', { id: s.id });
    $('#sv-submit').textContent = t('common.save');
    $('#sv-description').focus();
  }

  function follow(id, dev) {
    if (stopLive)
      stopLive();
    $('#live').hidden = false;
    $('#live-id').textContent = String(id);
    $('#live-text').textContent = t('msg.liveWaiting', { id: id });
    $('#live-status').replaceChildren();
    $('#live-stop').disabled = false;
    stopLive = dr.follow(id, dev, function (status) {
      $('#live-status').replaceChildren(dr.badge(status));
    }, function (state) {
      if (state === 'final') {
        $('#live-text').textContent = t('msg.liveFinal');
        $('#live-stop').disabled = true;
        stopLive = null;
      } else if (state === 'lost') {
        $('#live-text').textContent = t('msg.liveLost');
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

  function row(s) {
    var send = el('button', { type: 'button', class: 'small primary', text: t('common.send') });
    var ed = el('button', { type: 'button', class: 'small', text: t('common.edit') });
    var del = el('button', { type: 'button', class: 'small danger', text: t('common.delete') });
    send.addEventListener('click', function () {
      send.disabled = true;
      dr.api('POST', '/admin/api/saved-messages/' + s.id + '/send').then(function (r) {
        dr.ok(t('saved.sent', { id: r.body.id }));
        follow(r.body.id, s.deviseId);
      }, dr.fail).finally(function () { send.disabled = false; });
    });
    ed.addEventListener('click', function () { edit(s); });
    del.addEventListener('click', function () {
      if (!window.confirm(t('common.confirmDelete', { what: s.description })))
        return;
      dr.api('DELETE', '/admin/api/saved-messages/' + s.id).then(function () {
        dr.ok(t('saved.deleted', { id: s.id }));
        if (editing && editing.id === s.id)
          resetForm();
        loadSaved();
      }, dr.fail);
    });
    return el('tr', { 'data-id': s.id }, [
      el('td', { text: String(s.id) }), el('td', { class: 'mono', text: s.deviseId }), el('td', { text: s.description }),
      el('td', { class: 'mono', text: s.command }), el('td', { text: s.deliveryGuarantee }), dr.dataCell(s.data, 60),
      el('td', {}, [send, ' ', ed, ' ', del])
    ]);
  }

  function loadSaved() {
    var owner = $('#sv-filter').value;
    return dr.api('GET', '/admin/api/saved-messages' + (owner ? '?deviseId=' + enc(owner) : '')).then(function (r) {
      saved = r.body || [];
      var tb = $('#saved');
      tb.replaceChildren();
      saved.forEach(function (s) { tb.appendChild(row(s)); });
      if (!saved.length)
        dr.emptyRow(tb, 7);
      var tpl = $('#ro-template'), keep = tpl.value;
      tpl.replaceChildren();
      saved.forEach(function (s) {
        tpl.appendChild(el('option', { value: String(s.id), text: '#' + s.id + ' ' + s.description + ' (' + s.command + ')' }));
      });
      if (keep)
        tpl.value = keep;
    }, dr.fail);
  }

  $('#list-form').addEventListener('submit', function (e) {
    e.preventDefault();
    loadSaved();
  });
  $('#sv-reset').addEventListener('click', resetForm);
  $('#saved-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var desc = $('#sv-description'), cmd = $('#sv-command');
    [desc, cmd].forEach(function (f) { f.removeAttribute('aria-invalid'); });
    var body;
    try {
      if (!$('#sv-owner').value)
        throw new Error(t('msg.noDevices'));
      [desc, cmd].forEach(function (f) {
        if (!f.value.trim()) {
          f.setAttribute('aria-invalid', 'true');
          f.focus();
          throw new Error(t('err.required') + ': ' + f.labels[0].textContent.trim());
        }
      });
      body = { clientId: Number($('#sv-owner').value), deliveryGuarantee: $('#sv-guarantee').value,
               description: desc.value.trim(), command: cmd.value.trim(), data: dr.parseDataObject($('#sv-data')) };
    } catch (err) {
      dr.fail(err);
      return;
    }
    var req = editing ? dr.api('PUT', '/admin/api/saved-messages/' + editing.id, body)
                      : dr.api('POST', '/admin/api/saved-messages', body);
    var was = editing;
    req.then(function (r) {
      dr.ok(t(was ? 'saved.updated' : 'saved.created', { id: r.body && r.body.id !== undefined ? r.body.id : was.id }));
      resetForm();
      loadSaved();
    }, dr.fail);
  });

  /* ---- rollouts ---------------------------------------------------------------------------------- */

  function deviceList() {
    return $('#ro-devices').value.split(/[\s,;]+/).map(function (s) { return s.trim(); })
      .filter(function (s, i, a) { return s && a.indexOf(s) === i; });
  }

  $('#ro-add').addEventListener('click', function () {
    var prefix = $('#ro-prefix').value.trim();
    dr.api('GET', '/v1/devices?limit=500' + (prefix ? '&prefix=' + enc(prefix) : '')).then(function (r) {
      var have = deviceList(), added = 0;
      (r.body.devices || []).forEach(function (d) {
        if (have.indexOf(d.device) < 0) {
          have.push(d.device);
          added++;
        }
      });
      $('#ro-devices').value = have.join('\n');
      dr.ok(t('saved.rolloutAdded', { n: added }));
    }, dr.fail);
  });

  function showRollout(ro) {
    rollout = ro;
    $('#ro-panel').hidden = false;
    var c = ro.counts || {};
    var failed = (c.failed || 0) + (c.expired || 0) + (c.cancelled || 0);
    var delivered = (c.delivered || 0) + (c.completed || 0);
    var pending = (c.queued || 0) + (c.sent || 0);
    $('#ro-state').replaceChildren(el('span', { class: 'badge ' + ({ running: 'info', done: 'ok', cancelled: 'warn' }[ro.state] || ''),
                                                'data-state': ro.state, text: ro.state }));
    $('#ro-text').textContent = t('saved.rolloutProgress', { done: ro.enqueued, total: ro.total, delivered: delivered,
                                                             failed: failed, pending: pending });
    var bar = $('#ro-bar'), total = ro.total || 1;
    bar.replaceChildren();
    [['ok', delivered], ['bad', (c.failed || 0) + (c.expired || 0)], ['warn', c.cancelled || 0], ['pending', pending]]
      .forEach(function (p) {
        if (p[1] > 0)
          bar.appendChild(el('div', { class: p[0], style: 'width:' + (100 * p[1] / total) + '%' }));
      });
    bar.setAttribute('aria-label', $('#ro-text').textContent);
    $('#ro-pause').textContent = t(ro.state === 'paused' ? 'saved.rolloutResume' : 'saved.rolloutPause');
    $('#ro-pause').disabled = ro.state !== 'running' && ro.state !== 'paused';
    $('#ro-cancel').disabled = ro.state === 'cancelled' || ro.state === 'done';
    var settled = ro.state === 'cancelled' || (ro.state === 'done' && (c.queued || 0) === 0 && (c.sent || 0) === 0);
    if (settled && rolloutTimer) {
      clearInterval(rolloutTimer);
      rolloutTimer = null;
      dr.ok(t(ro.state === 'cancelled' ? 'saved.rolloutCancelled' : 'saved.rolloutDone'));
    }
  }

  function pollRollout() {
    if (!rollout)
      return;
    dr.api('GET', '/v1/rollouts/' + rollout.id).then(function (r) { showRollout(r.body); }, function (e) {
      clearInterval(rolloutTimer);
      rolloutTimer = null;
      dr.fail(e);
    });
  }

  $('#rollout-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var s = saved.filter(function (x) { return String(x.id) === $('#ro-template').value; })[0];
    var body;
    try {
      if (!s)
        throw new Error(t('err.required') + ': ' + t('saved.rolloutTemplate'));
      var devices = deviceList(), prefix = $('#ro-prefix').value.trim();
      body = { command: s.command, data: s.data === undefined ? null : s.data, believerGuarantee: s.deliveryGuarantee,
               ratePerSecond: dr.optInt($('#ro-rate'), 1, 1000) || 10 };
      if (devices.length)
        body.devices = devices;
      else if (prefix)
        body.query = { prefix: prefix };
      else
        throw new Error(t('saved.rolloutNoDevices'));
    } catch (err) {
      dr.fail(err);
      return;
    }
    dr.api('POST', '/v1/rollouts', body).then(function (r) {
      if (rolloutTimer)
        clearInterval(rolloutTimer);
      showRollout(r.body);
      rolloutTimer = setInterval(pollRollout, 1000);
    }, dr.fail);
  });

  $('#ro-pause').addEventListener('click', function () {
    if (!rollout)
      return;
    var what = rollout.state === 'paused' ? 'resume' : 'pause';
    dr.api('POST', '/v1/rollouts/' + rollout.id + '/' + what).then(function (r) {
      showRollout(r.body);
      if (what === 'pause')
        dr.ok(t('saved.rolloutPaused'));
      if (!rolloutTimer)
        rolloutTimer = setInterval(pollRollout, 1000);
    }, dr.fail);
  });
  $('#ro-cancel').addEventListener('click', function () {
    if (!rollout)
      return;
    dr.api('POST', '/v1/rollouts/' + rollout.id + '/cancel').then(function (r) { showRollout(r.body); pollRollout(); }, dr.fail);
  });

  dr.start().then(function () {
    loadOwners().then(loadSaved);
  }, function () {});
})();
