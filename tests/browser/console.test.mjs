// Scenarios of the web console in headless Chromium (run by run.py, which starts the stack and the
// simulated devices and passes their addresses in DROVER_* variables). The tests run in order and
// share one signed-in browser context; each waits for what a person would see, with bounded waits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.DROVER_BASE_URL;
const SHORT = process.env.DROVER_SHORT_URL;
const SHORT_TTL_S = Number(process.env.DROVER_SHORT_TTL_S || 4);
const ADMIN_PW = process.env.DROVER_ADMIN_PASSWORD;
const SHOTS = process.env.DROVER_SHOTS;
const WAIT = 15000;

let browser, ctx, page;
const pageErrors = [];

function watch(p) {
  p.on('pageerror', (e) => pageErrors.push(String(e)));
  p.on('dialog', (d) => d.accept());
  return p;
}

async function login(p, base, id, pw) {
  await p.goto(base + '/admin/login.html');
  await p.fill('#deviseId', id);
  await p.fill('#password', pw);
  await p.press('#password', 'Enter');
}

async function flashError(p) {
  const f = p.locator('#flash .flash.error').last();
  await f.waitFor({ timeout: WAIT });
  return (await f.textContent()).trim();
}

async function noHorizontalScroll(p) {
  return p.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
}

before(async () => {
  assert.ok(BASE && SHORT && ADMIN_PW && SHOTS, 'run this through tests/browser/run.py');
  browser = await chromium.launch({ executablePath: process.env.DROVER_CHROMIUM || '/usr/bin/chromium',
                                    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US' });
  ctx.setDefaultTimeout(WAIT);
  page = watch(await ctx.newPage());
});

after(async () => {
  if (browser)
    await browser.close();
});

test('the root redirects to the login page', async () => {
  const r = await page.goto(BASE + '/');
  assert.match(page.url(), /\/admin\/login\.html$/);
  assert.equal(r.status(), 200);
});

test('a wrong password is refused with the server\'s message', async () => {
  await login(page, BASE, 'admin', 'not-the-password');
  assert.match(await flashError(page), /Invalid credentials/);
  assert.match(page.url(), /login\.html/);
});

test('a protected page without a session goes to the login page', async () => {
  await page.goto(BASE + '/admin/messages.html');
  await page.waitForURL(/login\.html\?reason=expired/, { timeout: WAIT });
});

test('log in with the keyboard', async () => {
  await page.goto(BASE + '/admin/login.html');
  await page.focus('#deviseId');
  await page.keyboard.type('admin');
  await page.keyboard.press('Tab');
  await page.keyboard.type(ADMIN_PW);
  await page.keyboard.press('Enter');
  await page.waitForURL(/devices\.html/, { timeout: WAIT });
  await page.locator('#who').waitFor({ timeout: WAIT });
  assert.match(await page.locator('#who').textContent(), /admin \(MAN\)/);
  const cookies = await ctx.cookies();
  const s = cookies.find((c) => c.name === 'drover_session');
  assert.ok(s && s.httpOnly, 'the session cookie is HttpOnly');
});

test('create devices; a duplicate shows the API error', async () => {
  for (const id of ['b-dev', 'b-r1', 'b-r2', 'b-r3', 'b-quiet']) {
    await page.fill('#c-devise', id);
    await page.fill('#c-password', 'device-pw-' + id);
    await page.selectOption('#c-role', 'DEVISE');
    await page.fill('#c-description', 'browser test ' + id);
    await page.click('#c-submit');
    await page.locator(`#clients tr[data-client="${id}"]`).waitFor({ timeout: WAIT });
  }
  await page.locator('#devices tr[data-device="b-dev"]').waitFor({ timeout: WAIT });
  await page.fill('#c-devise', 'b-dev');
  await page.fill('#c-password', 'x');
  await page.fill('#c-description', 'again');
  await page.click('#c-submit');
  assert.match(await flashError(page), /exist|409|Conflict/i);
});

test('device search, queue view and pacing', async () => {
  await page.fill('#dev-search', 'b-r');
  await page.press('#dev-search', 'Enter');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#devices tr[data-device]')].map((r) => r.dataset.device);
    return rows.length === 3 && rows.every((d) => d.startsWith('b-r'));
  }, null, { timeout: WAIT });
  const row = page.locator('#devices tr[data-device="b-r1"]');
  await row.focus();
  await page.keyboard.press('Enter');
  await page.locator('#detail-body:not([hidden])').waitFor({ timeout: WAIT });
  await page.fill('#p-interval', '250');
  await page.click('#p-save');
  await page.locator('#flash .flash.ok', { hasText: 'Pacing of b-r1 saved' }).waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelector('#p-interval').value === '250', null, { timeout: WAIT });
  await page.fill('#p-window', '999');
  await page.click('#p-save');
  assert.match(await flashError(page), /1 to 64/);
});

let sentId;

test('send a command and see DELIVERED arrive live', async () => {
  await page.goto(BASE + '/admin/messages.html');
  await page.locator('#s-device option[value="b-dev"]').waitFor({ state: 'attached', timeout: WAIT });
  await page.selectOption('#s-device', 'b-dev');
  await page.fill('#s-command', 'digitalWrite');
  await page.fill('#s-data', '[1, 2]');
  await page.click('#s-submit');
  assert.match(await flashError(page), /JSON object/);
  await page.fill('#s-data', '{"pinNumber": 13, "pinValue": true}');
  await page.fill('#s-ttl', '600000');
  await page.click('#s-submit');
  await page.locator('#live:not([hidden])').waitFor({ timeout: WAIT });
  sentId = (await page.locator('#live-id').textContent()).trim();
  assert.match(sentId, /^\d+$/);
  await page.locator('#live-status .badge[data-status="DELIVERED"]').waitFor({ timeout: WAIT });
  const tl = await page.locator('#live-timeline').textContent();
  assert.match(tl, /NOT_DELIVERED[\s\S]*DELIVERED/);
});

test('find the message in the history and open its timeline with the keyboard', async () => {
  await page.fill('#f-device', 'b-dev');
  await page.selectOption('#f-status', 'DELIVERED');
  await page.click('#f-apply');
  // the filtered answer replaces the table: only this message is a DELIVERED one of b-dev
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll('#history tr[data-id]')];
    return rows.length === 1 && rows[0].dataset.id === id;
  }, sentId, { timeout: WAIT });
  const row = page.locator(`#history tr[data-id="${sentId}"]`);
  await row.focus();
  await page.keyboard.press('Space');
  await page.locator('#detail:not([hidden])').waitFor({ timeout: WAIT });
  assert.equal((await page.locator('#detail-title').textContent()).trim(), `Message ${sentId}`);
  const tl = await page.locator('#detail-timeline').textContent();
  assert.match(tl, /NOT_DELIVERED[\s\S]*DELIVERED/);
  assert.ok(await page.locator('#d-cancel').isHidden(), 'a delivered message offers no cancel');
  await page.screenshot({ path: join(SHOTS, 'messages-detail.png'), fullPage: true });
  // send it again as a new message: a new id, delivered live as well
  await page.click('#d-resend');
  await page.waitForFunction((old) => /^\d+$/.test(document.querySelector('#live-id').textContent) &&
                             document.querySelector('#live-id').textContent !== old, sentId, { timeout: WAIT });
  await page.locator('#live-status .badge[data-status="DELIVERED"]').waitFor({ timeout: WAIT });
});

test('cancel a pending message', async () => {
  await page.goto(BASE + '/admin/messages.html');
  await page.locator('#s-device option[value="b-quiet"]').waitFor({ state: 'attached', timeout: WAIT });
  await page.selectOption('#s-device', 'b-quiet');
  await page.fill('#s-command', 'reboot');
  await page.click('#s-submit');
  await page.locator('#live-status .badge[data-status="NOT_DELIVERED"]').waitFor({ timeout: WAIT });
  const id = (await page.locator('#live-id').textContent()).trim();
  await page.fill('#f-device', 'b-quiet');
  await page.click('#f-apply');
  const row = page.locator(`#history tr[data-id="${id}"]`);
  await row.waitFor({ timeout: WAIT });
  await row.click();
  await page.locator('#d-cancel:not([hidden])').waitFor({ timeout: WAIT });
  await page.click('#d-cancel');
  await page.locator('#flash .flash.ok', { hasText: `Message ${id} cancelled` }).waitFor({ timeout: WAIT });
  await page.locator('#detail-kv .badge[data-status="CANCELLED"]').waitFor({ timeout: WAIT });
  // the live panel, still following, reaches the final status too
  await page.locator('#live-status .badge[data-status="CANCELLED"]').waitFor({ timeout: WAIT });
});

test('create a saved command and send it with one click', async () => {
  await page.goto(BASE + '/admin/saved-messages.html');
  await page.locator('#sv-owner option').first().waitFor({ state: 'attached', timeout: WAIT });
  const owner = await page.locator('#sv-owner option', { hasText: 'b-dev' }).getAttribute('value');
  await page.selectOption('#sv-owner', owner);
  await page.fill('#sv-description', 'Blink the LED');
  await page.fill('#sv-command', 'blink');
  await page.fill('#sv-data', '{"times": 3}');
  await page.click('#sv-submit');
  const row = page.locator('#saved tr', { hasText: 'Blink the LED' });
  await row.waitFor({ timeout: WAIT });
  await row.locator('button', { hasText: 'Send' }).click();
  await page.locator('#live-status .badge[data-status="DELIVERED"]').waitFor({ timeout: WAIT });
});

test('a rollout to a search result shows its progress by outcome', async () => {
  const tpl = await page.locator('#ro-template option', { hasText: 'Blink the LED' }).getAttribute('value');
  await page.selectOption('#ro-template', tpl);
  await page.fill('#ro-prefix', 'b-r');
  await page.click('#ro-add');
  await page.waitForFunction(() => document.querySelector('#ro-devices').value.split('\n').length === 3,
                             null, { timeout: WAIT });
  await page.fill('#ro-rate', '5');
  await page.click('#ro-start');
  await page.locator('#ro-panel:not([hidden])').waitFor({ timeout: WAIT });
  await page.locator('#ro-state .badge[data-state="done"]').waitFor({ timeout: 30000 });
  await page.waitForFunction(() => /3 of 3 sent · 3 delivered · 0 failed · 0 pending/.test(
    document.querySelector('#ro-text').textContent), null, { timeout: 30000 });
});

test('a rollout can be paused and resumed', async () => {
  await page.goto(BASE + '/admin/saved-messages.html');
  const tpl = page.locator('#ro-template option', { hasText: 'Blink the LED' });
  await tpl.waitFor({ state: 'attached', timeout: WAIT });
  await page.selectOption('#ro-template', await tpl.getAttribute('value'));
  await page.fill('#ro-devices', ['b-p1', 'b-p2', 'b-p3', 'b-p4', 'b-p5', 'b-p6', 'b-p7', 'b-p8'].join('\n'));
  await page.fill('#ro-rate', '1');
  await page.click('#ro-start');
  await page.locator('#ro-state .badge[data-state="running"]').waitFor({ timeout: WAIT });
  await page.click('#ro-pause');
  await page.locator('#ro-state .badge[data-state="paused"]').waitFor({ timeout: WAIT });
  assert.equal((await page.textContent('#ro-pause')).trim(), 'Resume');
  const sent = async () => Number((await page.textContent('#ro-text')).match(/^(\d+) of 8 sent/)[1]);
  const held = await sent();
  assert.ok(held < 8, 'paused after ' + held + ' of 8');
  // paused: nothing more is enqueued while the page keeps polling (once a second)
  await page.waitForTimeout(2500);
  assert.equal(await sent(), held);
  await page.locator('#ro-state .badge[data-state="paused"]').waitFor({ timeout: WAIT });
  await page.click('#ro-pause');
  await page.locator('#ro-state .badge[data-state="done"]').waitFor({ timeout: 30000 });
  assert.equal(await sent(), 8);
});

test('the API reference shows every operation of the OpenAPI document', async () => {
  await page.goto(BASE + '/swagger-ui.html');
  assert.match(page.url(), /\/admin\/swagger\.html$/);
  await page.locator('#swagger-ui .opblock').first().waitFor({ timeout: WAIT });
  const spec = await (await fetch(BASE + '/v3/api-docs')).json();
  let ops = 0;
  for (const item of Object.values(spec.paths))
    ops += Object.keys(item).filter((m) => ['get', 'post', 'put', 'delete', 'patch'].includes(m)).length;
  assert.ok(ops >= 40, 'only ' + ops + ' operations in /v3/api-docs');
  assert.equal(await page.locator('#swagger-ui .opblock').count(), ops);
  assert.match(await page.textContent('#swagger-ui .info .title'), /Drover/);
});

test('create and revoke an API key', async () => {
  await page.goto(BASE + '/admin/keys.html');
  await page.selectOption('#k-scope', 'producer');
  await page.fill('#k-name', 'browser-test');
  await page.click('#k-submit');
  await page.locator('#k-new:not([hidden])').waitFor({ timeout: WAIT });
  const key = (await page.locator('#k-secret').textContent()).trim();
  assert.match(key, /^drk_/);
  const probe = () => fetch(BASE + '/v1/devices/b-dev', { headers: { Authorization: 'Bearer ' + key } })
    .then((r) => r.status);
  assert.equal(await probe(), 200);
  const row = page.locator('#keys tr', { hasText: 'browser-test' });
  await row.waitFor({ timeout: WAIT });
  await row.locator('button', { hasText: 'Revoke' }).click();
  await row.locator('.badge', { hasText: 'revoked' }).waitFor({ timeout: WAIT });
  const deadline = Date.now() + 10000;
  let st = await probe();
  while (st !== 401 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    st = await probe();
  }
  assert.equal(st, 401, 'a revoked key stops working');
});

test('the dashboard shows the numbers and draws its charts', async () => {
  await page.goto(BASE + '/admin/dashboard.html');
  await page.locator('#dash-now dd[data-metric="queue"]').waitFor({ timeout: WAIT });
  assert.ok(await page.evaluate(() => !!window.Chart), 'chart.js is served from /vendor/chart.js/');
  // the cancelled message's device never connected: nothing of it is queued any more
  assert.match(await page.locator('#dash-now dd[data-metric="queue"]').textContent(), /^\d+$/);
  // rates need a second sample (every 5 s); acks applied by this ingress were counted before
  await page.waitForFunction(() => /^\d/.test(document.querySelector('#dash-now dd[data-metric="DELIVERED"]').textContent),
                             null, { timeout: WAIT });
  assert.equal(await page.evaluate(() => window.Chart.getChart('c-outcomes').data.labels.length >= 1), true);
  // the figures are the cluster's (GET /v1/stats): commands for a device that never connects stay
  // queued, and the queue depth shown grows by them once a dispatcher's backlog round has seen them
  const stats = () => page.evaluate(() => window.dr.api('GET', '/v1/stats').then((r) => r.body));
  const before = await stats();
  assert.ok(before.dispatchers >= 1 && before.nodes >= 2, JSON.stringify(before));
  for (let i = 0; i < 3; i++) {
    const st = await page.evaluate((n) => window.dr.api('POST', '/v1/devices/b-dash-off/messages',
                                                         { command: 'dash' + n }).then((r) => r.status), i);
    assert.equal(st, 201);
  }
  const want = before.gauges.queueDepth + 3;
  await page.waitForFunction((min) => {
    const v = document.querySelector('#dash-now dd[data-metric="queue"]').textContent;
    return /^\d+$/.test(v) && Number(v) >= min;
  }, want, { timeout: 30000 });
  const shown = Number(await page.locator('#dash-now dd[data-metric="queue"]').textContent());
  const after = await stats();
  assert.ok(after.gauges.queueDepth >= want && shown >= want, `shown ${shown}, stats ${JSON.stringify(after.gauges)}`);
  assert.match(await page.locator('#dash-now dd[data-metric="resentTotal"]').textContent(), /^\d+$/);
});

test('switch the language to Russian and back', async () => {
  await page.goto(BASE + '/admin/devices.html');
  await page.locator('#lang').waitFor({ timeout: WAIT });
  await page.selectOption('#lang', 'ru');
  await page.waitForURL(/lang=ru/, { timeout: WAIT });
  await page.locator('nav.main a', { hasText: 'Устройства' }).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'ru');
  await page.goto(BASE + '/admin/messages.html');  // remembered without ?lang=
  await page.locator('#send-title', { hasText: 'Отправить команду' }).waitFor({ timeout: WAIT });
  await page.screenshot({ path: join(SHOTS, 'messages-ru.png'), fullPage: true });
  await page.selectOption('#lang', 'en');
  await page.locator('#send-title', { hasText: 'Send a command' }).waitFor({ timeout: WAIT });
});

test('every text has a Russian translation', async () => {
  const src = readFileSync(join(process.env.DROVER_CONSOLE_DIR, 'i18n.js'), 'utf8');
  const dicts = await page.evaluate(() => window.drI18n.dicts);
  const missing = Object.keys(dicts.en).filter((k) => !(k in dicts.ru));
  assert.deepEqual(missing, []);
  assert.ok(src.includes("'ru'"));
  // every data-i18n key used by the pages exists
  for (const name of ['login', 'devices', 'messages', 'saved-messages', 'dashboard', 'keys']) {
    const html = readFileSync(join(process.env.DROVER_CONSOLE_DIR, name + '.html'), 'utf8');
    for (const m of html.matchAll(/data-i18n(?:-[a-z-]+)?="([^"]+)"/g))
      assert.ok(m[1] in dicts.en, `${name}.html uses unknown text key ${m[1]}`);
  }
});

test('a DEVISE login may not use the console', async () => {
  const c = await browser.newContext();
  const p = watch(await c.newPage());
  await login(p, BASE, 'b-dev', 'device-pw-b-dev');
  assert.match(await flashError(p), /only the MAN role/);
  await p.goto(BASE + '/admin/devices.html');
  await p.waitForURL(/login\.html\?reason=/, { timeout: WAIT });
  await c.close();
});

test('an expired session sends the page to the login page', async () => {
  const c = await browser.newContext();
  const p = watch(await c.newPage());
  await login(p, SHORT, 'admin', ADMIN_PW);
  await p.waitForURL(/devices\.html/, { timeout: WAIT });
  const t0 = Date.now();
  await p.locator('#who').waitFor({ timeout: WAIT });
  // after the token's lifetime any API call ends on the login page with the reason
  await new Promise((r) => setTimeout(r, SHORT_TTL_S * 1000 + 1000 - Math.min(Date.now() - t0, 1000)));
  await p.reload();
  await p.waitForURL(/login\.html\?reason=expired/, { timeout: WAIT });
  await p.locator('#reason').waitFor({ timeout: WAIT });
  await c.close();
});

test('every page fits 360 px without horizontal scrolling; screenshots', async () => {
  const pages = ['devices', 'messages', 'saved-messages', 'dashboard', 'keys'];
  for (const w of [1280, 360]) {
    await page.setViewportSize({ width: w, height: w === 360 ? 740 : 900 });
    for (const name of pages) {
      await page.goto(BASE + '/admin/' + name + '.html');
      await page.locator('#who').waitFor({ timeout: WAIT });
      await page.waitForLoadState('networkidle');
      assert.ok(await noHorizontalScroll(page), `${name}.html scrolls sideways at ${w} px`);
      await page.screenshot({ path: join(SHOTS, `${name}-${w}.png`), fullPage: true });
    }
  }
  // the Russian texts are longer: the narrow layout must hold them too
  for (const name of pages) {
    await page.goto(BASE + '/admin/' + name + '.html?lang=ru');
    await page.locator('#who').waitFor({ timeout: WAIT });
    await page.waitForLoadState('networkidle');
    assert.ok(await noHorizontalScroll(page), `${name}.html?lang=ru scrolls sideways at 360 px`);
  }
  await page.screenshot({ path: join(SHOTS, 'keys-360-ru.png'), fullPage: true });
  await page.goto(BASE + '/admin/devices.html?lang=en');
  const c = await browser.newContext({ viewport: { width: 360, height: 740 } });
  const p = await c.newPage();
  await p.goto(BASE + '/admin/login.html');
  assert.ok(await noHorizontalScroll(p), 'login.html scrolls sideways at 360 px');
  await p.screenshot({ path: join(SHOTS, 'login-360.png') });
  await c.close();
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('sign out ends the session', async () => {
  await page.goto(BASE + '/admin/devices.html');
  await page.click('#signout');
  await page.waitForURL(/login\.html\?reason=logout/, { timeout: WAIT });
  await page.goto(BASE + '/admin/keys.html');
  await page.waitForURL(/login\.html\?reason=expired/, { timeout: WAIT });
});

test('no script errors on any page', () => {
  assert.deepEqual(pageErrors, []);
});
