// dashboard.test.mjs - the operator dashboard (/dashboard) in a real Chromium
// against aigw's admin API, started and seeded by run_browser.py.
//
// It checks that the page runs under its Content-Security-Policy without a
// single console error, that a key without the admin role sees the API's 403
// message and no data, that an admin sees exactly the figures `aigw report`
// gives (EXPECTED, taken by run_browser.py just before), that a user id full
// of markup stays text, and that the credential never leaves sessionStorage
// and the Authorization header. The steps share one browser and run in
// order: the figures are compared first, before anything here writes an
// audit row (a 403, an admin's change), since those would change them.
//
// Environment (run_browser.py sets it): AIGW_URL, AIGW_ADMIN_KEY,
// AIGW_ADMIN_USER, AIGW_USER_KEY, XSS_USER, CHROMIUM, ARTIFACT_DIR, DOCS_DIR,
// EXPECTED (JSON: each report's rows, and the requests sent), FAILING_BACKEND,
// SAVE_DOCS_SCREENSHOT.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
for (const name of ['AIGW_URL', 'AIGW_ADMIN_KEY', 'AIGW_USER_KEY', 'XSS_USER', 'CHROMIUM', 'EXPECTED']) {
  if (!env[name]) throw new Error(`${name} is not set: run this through run_browser.py`);
}
const URL_BASE = env.AIGW_URL.replace(/\/$/, '');
const PAGE_URL = URL_BASE + '/dashboard';
const ADMIN_KEY = env.AIGW_ADMIN_KEY;
const ADMIN_USER = env.AIGW_ADMIN_USER || 'ops';
const USER_KEY = env.AIGW_USER_KEY;
const XSS_USER = env.XSS_USER;
const EXPECTED = JSON.parse(env.EXPECTED);
const FAILING_BACKEND = env.FAILING_BACKEND || 'east';
const ARTIFACT_DIR = env.ARTIFACT_DIR || path.join(HERE, 'artifacts');
const DOCS_DIR = env.DOCS_DIR || path.join(HERE, '..', '..', 'docs');
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const WAIT_MS = 15000;

let browser;
// Every page opened, with what it logged and requested.
const watched = [];

before(async () => {
  browser = await puppeteer.launch({
    executablePath: env.CHROMIUM,
    headless: true,
    pipe: true, // the browser goes when this process goes, however it ends
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    defaultViewport: { width: 1280, height: 900 },
  });
});

after(async () => {
  if (browser) await browser.close();
});

/* --- helpers ----------------------------------------------------------------- */

// A new page (in a fresh browser context when asked) that records console
// errors, uncaught exceptions, CSP violations, failed loads and requests.
async function openPage(label, { isolated = false } = {}) {
  const context = isolated ? await browser.createBrowserContext() : browser.defaultBrowserContext();
  const page = await context.newPage();
  const w = { label, page, context, errors: [], requests: [] };
  watched.push(w);
  await page.evaluateOnNewDocument(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}` +
        ` at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (m) => {
    if (m.type() === 'error') w.errors.push({ text: m.text(), url: (m.location() || {}).url || '' });
  });
  page.on('pageerror', (e) => w.errors.push({ text: 'uncaught: ' + (e.message || e), url: '' }));
  page.on('requestfailed', (r) =>
    w.errors.push({ text: `request failed: ${r.failure()?.errorText}`, url: r.url() }));
  page.on('request', (r) => w.requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  return w;
}

async function setValue(page, selector, value) {
  await page.$eval(selector, (el, v) => {
    el.value = v;
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
}

async function signIn(page, key) {
  await page.waitForSelector('#credential', { visible: true, timeout: WAIT_MS });
  await setValue(page, '#credential', '');
  await page.type('#credential', key);
  await page.click('#signin-submit');
}

// Waits for body[data-ready="1"]; on a timeout says what the page shows.
async function waitReady(page, what = 'the dashboard') {
  try {
    await page.waitForSelector('body[data-ready="1"]', { timeout: WAIT_MS });
  } catch {
    const shown = await page.evaluate(() => ({
      status: document.getElementById('status').textContent,
      signin: document.getElementById('signin-error').textContent,
      panels: [...document.querySelectorAll('.panel-error')].map((p) => p.textContent).filter(Boolean),
    }));
    throw new Error(`${what} never became ready: ${JSON.stringify(shown)}`);
  }
}

// The rows of a table: the <tr>'s data-* and, per data-col, the cell's
// data-value when it has one (numbers) else its text.
function tableRows(page, id) {
  return page.$$eval(`#${id} tbody tr:not(.empty)`, (trs) => trs.map((tr) => ({
    data: { ...tr.dataset },
    cells: Object.fromEntries([...tr.cells].filter((td) => td.dataset.col)
      .map((td) => [td.dataset.col, td.dataset.value !== undefined ? td.dataset.value : td.textContent])),
    text: Object.fromEntries([...tr.cells].filter((td) => td.dataset.col)
      .map((td) => [td.dataset.col, td.textContent])),
  })));
}

// A numeric cell's data-value as a number ('' = the API's null).
function num(v) {
  assert.notEqual(v, undefined, 'a numeric cell without data-value');
  return v === '' ? null : Number(v);
}

function sumBy(rows, keyOf, cols) {
  const out = new Map();
  for (const r of rows) {
    const k = keyOf(r);
    if (!out.has(k)) out.set(k, Object.fromEntries(cols.map((c) => [c, 0])));
    const s = out.get(k);
    for (const c of cols) s[c] += Number(r[c]) || 0;
  }
  return out;
}

const str = (v) => (v === null || v === undefined ? '' : String(v));

async function apiDirect(pathname, key) {
  const r = await fetch(URL_BASE + '/admin/api/' + pathname, { headers: { Authorization: 'Bearer ' + key } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

// The status of one chat completion made with key.
async function chatStatus(key) {
  const r = await fetch(URL_BASE + '/v1/chat/completions', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello' }] }),
  });
  await r.arrayBuffer();
  return r.status;
}

/* --- the steps, in order ------------------------------------------------------ */

let admin; // the admin's page, shared by the steps below

test('the page and its files are served under the CSP, and need no credential', async () => {
  admin = await openPage('admin');
  const resp = await admin.page.goto(PAGE_URL, { waitUntil: 'load' });
  assert.equal(resp.status(), 200);
  const h = resp.headers();
  assert.equal(str(h['content-security-policy']).replace(/\s+/g, ' ').trim(), CSP);
  assert.match(str(h['content-type']), /^text\/html/);
  assert.equal(h['x-content-type-options'], 'nosniff');
  assert.match(str(h['cache-control']), /no-store/);
  for (const [file, type] of [['app.js', /javascript/], ['app.css', /^text\/css/]]) {
    const r = await fetch(`${PAGE_URL}/${file}`);
    assert.equal(r.status, 200, `${file}: HTTP ${r.status}`);
    assert.match(str(r.headers.get('content-type')), type, `${file}'s Content-Type`);
    const size = (await r.arrayBuffer()).byteLength;
    assert.ok(size > 1000 && size < 60 * 1024, `${file} is ${size} bytes`);
  }
  await admin.page.waitForSelector('#signin', { visible: true, timeout: WAIT_MS });
  assert.equal(await admin.page.$eval('#dashboard', (m) => m.hidden), true);
  assert.equal(await admin.page.evaluate(() => document.body.dataset.ready), undefined);
  // The stylesheet applied (the CSP let it load).
  assert.equal(await admin.page.evaluate(() => getComputedStyle(document.body).paddingLeft), '20px');
  assert.deepEqual(admin.errors, []);
});

test("an admin's dashboard shows exactly the figures of aigw report", async () => {
  const { page } = admin;
  await signIn(page, ADMIN_KEY);
  await waitReady(page);
  assert.equal(await page.$eval('#dashboard', (m) => getComputedStyle(m).display), 'grid');
  assert.match(await page.$eval('#whoami', (e) => e.textContent), new RegExp(ADMIN_USER));
  assert.match(await page.$eval('#updated', (e) => e.textContent), /^Updated \d\d:\d\d:\d\d$/);

  // Usage: one row per user, the sums over the days of the report's rows.
  const cols = ['requests', 'succeeded', 'failed', 'refused', 'prompt_tokens', 'completion_tokens', 'total_tokens'];
  const want = sumBy(EXPECTED.usage, (r) => str(r.user_id), cols);
  assert.ok(want.size >= 5, `the usage report has ${want.size} users`);
  const usage = await tableRows(page, 'usage-table');
  assert.deepEqual(usage.map((r) => r.data.user).sort(), [...want.keys()].sort());
  for (const r of usage) {
    const got = Object.fromEntries(cols.map((c) => [c, num(r.cells[c])]));
    assert.deepEqual(got, want.get(r.data.user), `usage of ${r.data.user}`);
  }
  // Budget used in the current period, as the budget report has it.
  for (const b of EXPECTED.budget) {
    const latest = EXPECTED.budget.filter((x) => str(x.user_id) === str(b.user_id))
      .sort((x, y) => str(y.period_start).localeCompare(str(x.period_start)))[0];
    if (latest !== b) continue;
    const row = usage.find((r) => r.data.user === str(b.user_id));
    if (row) assert.equal(num(row.cells.budget_used), b.used, `budget used by ${b.user_id}`);
  }

  // Traffic: the totals are the sums over the hours.
  const sum = (rows, c) => rows.reduce((s, r) => s + (Number(r[c]) || 0), 0);
  assert.ok(EXPECTED.traffic.length > 0, 'the traffic report is empty');
  assert.equal(num(await page.$eval('#total-requests', (e) => e.dataset.value)), sum(EXPECTED.traffic, 'requests'));
  assert.equal(num(await page.$eval('#total-tokens', (e) => e.dataset.value)), sum(EXPECTED.traffic, 'total_tokens'));
  assert.equal(sum(EXPECTED.traffic, 'requests'), EXPECTED.sent.length, 'traffic counts every request sent');
  for (const id of ['chart-requests', 'chart-tokens']) {
    assert.equal(await page.$$eval(`#${id} svg`, (s) => s.length), 1, `#${id} has its chart`);
  }
  assert.ok(await page.$$eval('#chart-requests svg rect.bar', (s) => s.length) >= 1, 'no bars');

  // Refusals per reason.
  const refusals = await tableRows(page, 'refusals-table');
  assert.deepEqual(
    Object.fromEntries(refusals.map((r) => [r.data.reason, num(r.cells.refused)])),
    Object.fromEntries(EXPECTED.refusals.map((r) => [str(r.reason), r.refused])));
  for (const reason of ['rate_limit_exceeded', 'budget_exceeded']) {
    assert.ok(refusals.some((r) => r.data.reason === reason), `no ${reason} refusals shown`);
  }

  // Errors and latency per backend and hour.
  const backends = await tableRows(page, 'backends-table');
  const wantErr = sumBy(EXPECTED.errors, (r) => str(r.backend), ['calls', 'failures', 'answered', 'failed_over']);
  const gotErr = sumBy(backends.map((r) => ({ backend: r.data.backend,
    calls: num(r.cells.calls), failures: num(r.cells.failures),
    answered: num(r.cells.answered), failed_over: num(r.cells.failed_over) })),
  (r) => r.backend, ['calls', 'failures', 'answered', 'failed_over']);
  assert.deepEqual(Object.fromEntries(gotErr), Object.fromEntries(wantErr));
  assert.ok(wantErr.get(FAILING_BACKEND)?.failures > 0, `${FAILING_BACKEND} has no failures in the report`);
  for (const e of EXPECTED.errors) {
    const row = backends.find((r) => r.data.backend === str(e.backend) && r.data.hour === str(e.hour));
    assert.ok(row, `no row for ${e.backend} at ${e.hour}`);
    assert.equal(num(row.cells.error_rate), e.error_rate, `error rate of ${e.backend} at ${e.hour}`);
  }
  for (const l of EXPECTED.latency) {
    const row = backends.find((r) => r.data.backend === str(l.backend) && r.data.hour === str(l.hour));
    assert.ok(row, `no row for ${l.backend} at ${l.hour}`);
    for (const c of ['p50_ms', 'p95_ms', 'p99_ms', 'max_ms']) {
      assert.equal(num(row.cells[c]), l[c], `${c} of ${l.backend} at ${l.hour}`);
    }
  }

  // Failovers: the same requests.
  const failovers = await tableRows(page, 'failovers-table');
  assert.ok(EXPECTED.failovers.length > 0, 'the failovers report is empty');
  assert.equal(failovers.length, EXPECTED.failovers.length);
  assert.deepEqual(failovers.map((r) => r.data.requestId).sort(),
    EXPECTED.failovers.map((r) => str(r.request_id)).sort());

  // Breakers: the failing backend's is open, with a Reset button; no other has one.
  const breakers = await tableRows(page, 'breakers-table');
  const failing = breakers.find((r) => r.data.backend === FAILING_BACKEND);
  assert.ok(failing, `no breaker row for ${FAILING_BACKEND}`);
  assert.equal(failing.data.state, 'open');
  const resets = await page.$$eval('#breakers-table tbody tr', (trs) =>
    trs.filter((tr) => [...tr.querySelectorAll('button')].some((b) => b.textContent === 'Reset'))
      .map((tr) => tr.dataset.backend));
  assert.deepEqual(resets, breakers.filter((r) => r.data.state !== 'closed').map((r) => r.data.backend));

  // Users: every user the run created.
  const users = (await tableRows(page, 'users-table')).map((r) => r.data.user);
  for (const u of [ADMIN_USER, XSS_USER, ...want.keys()]) assert.ok(users.includes(u), `user ${u} not listed`);
});

test('a user id full of markup is shown as text and runs nothing', async () => {
  const { page } = admin;
  const seen = await page.evaluate((xss) => {
    const text = (table) => [...document.querySelectorAll(`#${table} tbody tr`)]
      .filter((tr) => tr.dataset.user === xss)
      .map((tr) => tr.querySelector('td[data-col="user_id"]').textContent);
    return {
      usage: text('usage-table'), users: text('users-table'), audit: text('audit-table'),
      xss: typeof window.__xss,
      scripts: [...document.scripts].map((s) => s.src),
      images: document.images.length,
    };
  }, XSS_USER);
  assert.deepEqual(seen.usage, [XSS_USER]);
  assert.ok(seen.usage[0].includes('<script>'));
  assert.deepEqual(seen.users, [XSS_USER]);
  assert.ok(seen.audit.length > 0 && seen.audit.every((t) => t === XSS_USER), 'audit rows of the user');
  assert.equal(seen.xss, 'undefined');
  assert.deepEqual(seen.scripts, [PAGE_URL + '/app.js']);
  assert.equal(seen.images, 0);
});

test('the credential stays in sessionStorage and the Authorization header', async () => {
  const { page, requests } = admin;
  const stored = await page.evaluate(() => ({
    session: sessionStorage.getItem('aigw.admin.credential'),
    local: localStorage.length,
    cookie: document.cookie,
  }));
  assert.equal(stored.session, ADMIN_KEY);
  assert.equal(stored.local, 0);
  assert.equal(stored.cookie, '');
  assert.deepEqual(await page.cookies(), []);
  const api = requests.filter((r) => new URL(r.url).pathname.startsWith('/admin/api/'));
  assert.ok(api.length >= 9, `only ${api.length} admin API requests seen`);
  for (const r of requests) {
    for (const key of [ADMIN_KEY, USER_KEY]) assert.ok(!r.url.includes(key), `a key in the URL ${r.url}`);
    assert.ok(!new URL(r.url).search.toLowerCase().includes('aigw_'), `a key-like value in ${r.url}`);
  }
  for (const r of api) assert.equal(r.headers.authorization, 'Bearer ' + ADMIN_KEY, `${r.method} ${r.url}`);
  // The page's own files go without it.
  for (const r of requests.filter((x) => x.url.startsWith(PAGE_URL))) {
    assert.equal(r.headers.authorization, undefined, `${r.url} carried a credential`);
  }
});

test('the period selector asks each report for its period', async () => {
  const { page, requests } = admin;
  const from = requests.length;
  await page.select('#period', 'hour');
  await waitReady(page, 'the last hour');
  const since = (name) => {
    const r = requests.slice(from).find((x) => new URL(x.url).pathname.endsWith('/reports/' + name));
    assert.ok(r, `no request for the ${name} report`);
    return Number(new URL(r.url).searchParams.get('since'));
  };
  for (const name of ['traffic', 'errors', 'latency', 'failovers', 'refusals']) assert.equal(since(name), 3600, name);
  const now = new Date();
  const sinceMidnight = (now - Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())) / 1000;
  assert.ok(Math.abs(since('usage') - sinceMidnight) < 120, `usage since ${since('usage')}, midnight ${sinceMidnight} s ago`);
  const audit = requests.slice(from).find((x) => new URL(x.url).pathname.endsWith('/audit'));
  assert.equal(new URL(audit.url).searchParams.get('since'), '3600');
  // "The last hour" of usage is today: the same users and figures as the day's.
  const usage = await tableRows(page, 'usage-table');
  assert.deepEqual(usage.map((r) => r.data.user).sort(),
    [...new Set(EXPECTED.usage.map((r) => str(r.user_id)))].sort(), 'usage for the last hour (today)');
  assert.match(await page.$eval('#usage-period', (e) => e.textContent), /today/);

  const from30 = requests.length;
  await page.select('#period', '30d');
  await waitReady(page, 'the last 30 days');
  const asked = requests.slice(from30).filter((x) => new URL(x.url).pathname.includes('/reports/'));
  assert.equal(asked.length, 6, 'reports asked for 30 days');
  for (const r of asked) assert.equal(new URL(r.url).searchParams.get('since'), '2592000', r.url);
  assert.equal(num(await page.$eval('#total-requests', (e) => e.dataset.value)), EXPECTED.sent.length);

  await page.select('#period', 'day');
  await waitReady(page, 'the last day');
});

test('the audit table filters by user and by request id', async () => {
  const { page } = admin;
  const sentBy = (u) => EXPECTED.sent.filter((s) => s.user === u).length;
  for (const user of ['alice', XSS_USER]) {
    await setValue(page, '#audit-user', user);
    await setValue(page, '#audit-request-id', '');
    await page.click('#audit-apply');
    await waitReady(page, `the audit rows of ${user}`);
    const rows = await tableRows(page, 'audit-table');
    assert.equal(rows.length, sentBy(user), `audit rows of ${user}`);
    assert.ok(rows.every((r) => r.data.user === user && r.text.user_id === user), `rows of others for ${user}`);
  }
  const rid = str(EXPECTED.failovers[0].request_id);
  await setValue(page, '#audit-user', '');
  await setValue(page, '#audit-request-id', rid);
  await page.click('#audit-apply');
  await waitReady(page, 'the audit row of one request');
  const one = await tableRows(page, 'audit-table');
  assert.deepEqual(one.map((r) => r.data.requestId), [rid]);
  assert.equal(one[0].text.request_id, rid);
  await page.click('#audit-clear');
  await waitReady(page, 'the whole audit table');
  const all = await tableRows(page, 'audit-table');
  assert.equal(all.filter((r) => r.text.operation !== 'admin').length, Math.min(50, EXPECTED.sent.length));
});

test('a full-page screenshot is saved', async () => {
  fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
  const file = path.join(ARTIFACT_DIR, 'dashboard.png');
  await admin.page.screenshot({ path: file, fullPage: true });
  const size = fs.statSync(file).size;
  assert.ok(size > 10 * 1024, `dashboard.png is only ${size} bytes`);
  if (env.SAVE_DOCS_SCREENSHOT === '1') {
    fs.copyFileSync(file, path.join(DOCS_DIR, 'dashboard.png'));
  }
});

// From here on the steps write audit rows (changes, refusals): the figures
// above have been compared already.

test('an admin resets an open breaker, and the change is audited', async () => {
  const { page } = admin;
  const button = await page.waitForSelector(`#breakers-table tbody tr[data-backend="${FAILING_BACKEND}"] button`,
    { timeout: WAIT_MS });
  await button.click();
  await page.waitForFunction((name) => {
    const tr = [...document.querySelectorAll('#breakers-table tbody tr')].find((t) => t.dataset.backend === name);
    return document.body.dataset.ready === '1' && tr && tr.dataset.state === 'closed';
  }, { timeout: WAIT_MS }, FAILING_BACKEND);
  assert.equal(await page.$$eval('#breakers-table tbody button', (b) => b.length), 0);
  const audit = await tableRows(page, 'audit-table');
  assert.ok(audit.some((r) => r.data.user === ADMIN_USER && r.text.operation === 'admin'),
    "no audit row for the admin's reset");
});

test('an admin creates a user, gets a key shown once, and disables the user', async () => {
  const { page } = admin;
  const user = 'carol';
  await setValue(page, '#new-user-id', user);
  await setValue(page, '#new-user-budget', '500000');
  await page.click('#new-user-create');
  const rowSel = (u) => `#users-table tbody tr[data-user="${u}"]`;
  await page.waitForSelector(rowSel(user), { timeout: WAIT_MS });
  await waitReady(page, 'the users after a create');
  const created = (await tableRows(page, 'users-table')).find((r) => r.data.user === user);
  assert.equal(num(created.cells.token_budget), 500000);
  assert.equal(created.data.disabled, '0');

  const newKey = await page.$$(`${rowSel(user)} button`);
  const labels = await Promise.all(newKey.map((b) => b.evaluate((x) => x.textContent)));
  await newKey[labels.indexOf('New key')].click();
  await page.waitForSelector('#new-key:not([hidden])', { timeout: WAIT_MS });
  const key = await page.$eval('#new-key-text', (e) => e.textContent);
  assert.match(key, /^aigw_/);
  assert.match(await page.$eval('#new-key', (e) => e.textContent), /only once/);
  assert.equal(await page.$eval('#new-key-user', (e) => e.textContent), user);
  assert.equal(await chatStatus(key), 200, 'the new key does not work');

  await page.click('#new-key-dismiss');
  assert.equal(await page.$eval('#new-key-text', (e) => e.textContent), '');
  const buttons = await page.$$(`${rowSel(user)} button`);
  const texts = await Promise.all(buttons.map((b) => b.evaluate((x) => x.textContent)));
  await buttons[texts.indexOf('Disable')].click();
  await page.waitForSelector(`${rowSel(user)}[data-disabled="1"]`, { timeout: WAIT_MS });
  const refused = await chatStatus(key);
  assert.ok([401, 403].includes(refused), `a disabled user's key got ${refused}`);
});

test('a reload signs in again from sessionStorage; Sign out forgets everything', async () => {
  const { page } = admin;
  await page.reload({ waitUntil: 'load' });
  await waitReady(page, 'the dashboard after a reload');
  await page.click('#signout');
  const state = await page.evaluate(() => ({
    stored: sessionStorage.getItem('aigw.admin.credential'),
    rows: document.querySelectorAll('main tbody tr').length,
    signin: !document.getElementById('signin').hidden,
    dashboard: !document.getElementById('dashboard').hidden,
    ready: 'ready' in document.body.dataset,
    total: document.getElementById('total-requests').textContent,
  }));
  assert.deepEqual(state, { stored: null, rows: 0, signin: true, dashboard: false, ready: false, total: '' });
});

test("a key without the admin role sees the API's 403 message and no data", async () => {
  const user = await openPage('non-admin', { isolated: true });
  const { page } = user;
  await page.goto(PAGE_URL, { waitUntil: 'load' });
  const direct = await apiDirect('me', USER_KEY);
  assert.equal(direct.status, 403);
  const message = direct.body?.error?.message;
  assert.ok(message, '403 without error.message');
  await signIn(page, USER_KEY);
  await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '', { timeout: WAIT_MS });
  const shown = await page.evaluate(() => ({
    error: document.getElementById('signin-error').textContent,
    rows: document.querySelectorAll('main tbody tr').length,
    dashboard: !document.getElementById('dashboard').hidden,
    ready: 'ready' in document.body.dataset,
    stored: sessionStorage.getItem('aigw.admin.credential'),
  }));
  assert.ok(shown.error.includes(message), `#signin-error says ${JSON.stringify(shown.error)}`);
  assert.deepEqual({ ...shown, error: undefined },
    { error: undefined, rows: 0, dashboard: false, ready: false, stored: null });
  assert.ok(user.requests.every((r) => !new URL(r.url).pathname.startsWith('/admin/api/') ||
    new URL(r.url).pathname === '/admin/api/me'), 'called more than /admin/api/me');

  // A key that is no key at all: 401, its message, nothing else.
  await signIn(page, 'aigw_not_a_real_key');
  await page.waitForFunction((m) => {
    const text = document.getElementById('signin-error').textContent;
    return text !== '' && !text.includes(m);
  },
    { timeout: WAIT_MS }, message);
  const bad = await apiDirect('me', 'aigw_not_a_real_key');
  assert.equal(bad.status, 401);
  assert.ok((await page.$eval('#signin-error', (e) => e.textContent)).includes(bad.body.error.message));
  assert.equal(await page.$$eval('main tbody tr', (r) => r.length), 0);
  await user.context.close();
});

test('no page logged an error or a CSP violation', () => {
  const problems = [];
  for (const w of watched) {
    for (const e of w.errors) {
      // Chromium logs every 4xx answer as "Failed to load resource"; the
      // non-admin's page is meant to get its 401 and 403 from /admin/api/me.
      const expected = w.label === 'non-admin' && /status of 40[13]/.test(e.text) &&
        e.url.endsWith('/admin/api/me');
      if (!expected) problems.push(`${w.label}: ${e.text} ${e.url}`);
    }
  }
  assert.deepEqual(problems, []);
});
