/* Dashboard: every 5 s it reads GET /v1/stats (the whole cluster's counters and backlog gauges) and
 * turns the cumulative counters into per-minute rates from successive samples: commands by outcome
 * (status changes), accepted commands and re-sends. Queue depth, in flight and the oldest pending
 * message come from the gauges of the dispatchers that reported recently; with none they show as
 * unknown. Charts use Chart.js from /vendor/chart.js/ when it is installed; without it the numbers
 * still show as text. */
(function () {
  'use strict';
  var dr = window.dr, t = dr.t, el = dr.el, $ = dr.$;
  var POINTS = 60, PERIOD = 5000;
  var OUTCOMES = [['DELIVERED', '#2ea043'], ['COMPLETED', '#56d364'], ['COMPLETED_WITH_ERROR', '#d29922'],
                  ['EXPIRED', '#e3b341'], ['FAILED', '#f85149'], ['CANCELLED', '#8b98a5']];
  var prev = null, charts = {};

  function makeChart(id, datasets) {
    if (!window.Chart)
      return null;
    var c = window.Chart;
    c.defaults.color = '#8b98a5';
    c.defaults.borderColor = '#2c3845';
    return new c(document.getElementById(id), {
      type: 'line',
      data: { labels: [], datasets: datasets.map(function (d) {
        return { label: d[0], borderColor: d[1], backgroundColor: d[1], data: [], pointRadius: 0, tension: 0.2 };
      }) },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: { y: { beginAtZero: true } }, plugins: { legend: { labels: { boxWidth: 12 } } } }
    });
  }

  function push(chart, label, values) {
    if (!chart)
      return;
    chart.data.labels.push(label);
    chart.data.datasets.forEach(function (ds, i) {
      ds.data.push(values[i]);
      if (ds.data.length > POINTS)
        ds.data.shift();
    });
    if (chart.data.labels.length > POINTS)
      chart.data.labels.shift();
    chart.update();
  }

  function show(now) {
    var dl = $('#dash-now');
    dl.replaceChildren();
    now.forEach(function (p) {
      dl.appendChild(el('dt', { text: p[0] }));
      dl.appendChild(el('dd', { 'data-metric': p[2], text: p[1] === null ? (p[2] === 'oldest' ? t('common.unknown') : '—') : String(p[1]) }));
    });
  }

  /* A counter that went down (a node restarted, or its hash expired) gives no rate for that sample
   * rather than a negative one. */
  function rate(now, before, mins) {
    return now >= before ? (now - before) / mins : null;
  }

  function tick() {
    return dr.api('GET', '/v1/stats').then(function (r) {
      var b = r.body, at = b.time, g = b.gauges, c = b.counters;
      var cur = { at: at, resends: c.resent, accepted: c.accepted, st: {} };
      OUTCOMES.forEach(function (o) { cur.st[o[0]] = c.statusChanges[o[0]] || 0; });
      var label = new Date(at).toLocaleTimeString(), rates = null, resendRate = null, acceptRate = null;
      if (prev && at > prev.at) {
        var mins = (at - prev.at) / 60000;
        rates = OUTCOMES.map(function (o) { return rate(cur.st[o[0]], prev.st[o[0]], mins); });
        resendRate = rate(cur.resends, prev.resends, mins);
        acceptRate = rate(cur.accepted, prev.accepted, mins);
        push(charts.outcomes, label, rates);
        push(charts.resends, label, [resendRate]);
      }
      /* no dispatcher reported recently: the backlog is unknown, not empty */
      var queue = b.dispatchers > 0 ? g.queueDepth : null;
      var oldest = b.dispatchers > 0 ? (g.oldestPendingMs === null ? 0 : Math.round(g.oldestPendingMs / 100) / 10) : null;
      push(charts.queue, label, [queue]);
      push(charts.oldest, label, [oldest]);
      prev = cur;
      function r1(x) { return x === null ? null : Math.round(x * 10) / 10; }
      show([[t('dash.queue'), queue, 'queue'], [t('dash.inFlight'), b.dispatchers > 0 ? g.inFlight : null, 'inFlight'],
            [t('dash.oldest'), oldest, 'oldest'], [t('dash.accepted'), r1(acceptRate), 'accepted'],
            [t('dash.resends'), r1(resendRate), 'resends'], [t('dash.resentTotal'), c.resent, 'resentTotal']]
           .concat(OUTCOMES.map(function (o, i) { return [o[0] + '/min', rates ? r1(rates[i]) : null, o[0]]; })));
      $('#dash-updated').textContent = t('dash.updated', { time: label }) + ' · ' +
        t('dash.nodes', { nodes: b.nodes, dispatchers: b.dispatchers });
    }).catch(dr.fail);
  }

  dr.start().then(function () {
    if (!window.Chart)
      $('#dash-nochart').hidden = false;
    charts.outcomes = makeChart('c-outcomes', OUTCOMES);
    charts.queue = makeChart('c-queue', [[t('dash.queue'), '#3d8bfd']]);
    charts.oldest = makeChart('c-oldest', [[t('dash.oldest'), '#d29922']]);
    charts.resends = makeChart('c-resends', [[t('dash.resends'), '#f85149']]);
    tick();
    setInterval(tick, PERIOD);
  }, function () {});
})();
