// The operator console (docs/console.md) in Debian's headless Chromium,
// driven by puppeteer-core. tests/e2e/test_console.c starts the API and a
// worker with real data and runs this file with `node --test`; it passes:
//   CONSOLE_API_URL, CONSOLE_OPERATOR_TOKEN, CONSOLE_ORG_TOKEN (the
//   organization of the failed job and the webhook), CONSOLE_JOB_FAILED,
//   CONSOLE_JOB_PROCESSING, CONSOLE_JOB_DEAD, CONSOLE_HOOK_ID,
//   CONSOLE_HOOK_URL, CONSOLE_WORKER_METRICS_PORT (of the test's worker),
//   CONSOLE_DATABASE_URL (expected figures are read with psql, by queries
//   of their own).
// BULKREG_TEST_CONSOLE_SCREENSHOTS=DIR saves a screenshot of each page there.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import puppeteer from 'puppeteer-core';

const E = process.env;
const API = E.CONSOLE_API_URL;
const OPERATOR = E.CONSOLE_OPERATOR_TOKEN;
const ORG = E.CONSOLE_ORG_TOKEN;
const FAILED = E.CONSOLE_JOB_FAILED;
const PROCESSING = E.CONSOLE_JOB_PROCESSING;
const SHOTS = E.BULKREG_TEST_CONSOLE_SCREENSHOTS;

for (const k of ['CONSOLE_API_URL', 'CONSOLE_OPERATOR_TOKEN', 'CONSOLE_ORG_TOKEN',
  'CONSOLE_JOB_FAILED', 'CONSOLE_JOB_PROCESSING', 'CONSOLE_HOOK_ID', 'CONSOLE_HOOK_URL',
  'CONSOLE_DATABASE_URL', 'CONSOLE_WORKER_METRICS_PORT']) {
  assert.ok(E[k], `${k} is not set: run this through tests/e2e/test_console.c`);
}

const sql = (q) => execFileSync('psql', ['-XAtq', '-d', E.CONSOLE_DATABASE_URL, '-c', q],
  { encoding: 'utf8' }).trim();
const sqlNumber = (q) => Number(sql(q));

async function api(path, token = ORG) {
  const r = await fetch(API + path, { headers: { Authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

/* Polls fn until it returns a truthy value or ms pass; returns its last value. */
async function until(fn, ms = 10000) {
  const end = Date.now() + ms;
  let v = await fn();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    v = await fn();
  }
  return v;
}

let browser;
let page;
const requests = [];
const pageErrors = [];

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

const figure = (key) => page.$eval(`[data-k="${key}"]`, (e) => e.textContent);

before(async () => {
  browser = await puppeteer.launch({
    executablePath: E.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
});

test('without an operator token the console is refused', async () => {
  const resp = await page.goto(`${API}/console`);
  const chain = resp.request().redirectChain();
  assert.equal(chain.length, 1);
  assert.equal(chain[0].response().status(), 303);
  assert.equal(new URL(page.url()).pathname, '/console/login');
  for (const token of [null, ORG]) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const json = await fetch(`${API}/console/overview.json`, { headers });
    assert.equal(json.status, 401, `overview.json with ${token ? 'an org token' : 'no token'}`);
    const html = await fetch(`${API}/console/jobs`, { headers, redirect: 'manual' });
    assert.ok([303, 401].includes(html.status), `jobs page: ${html.status}`);
    const act = await fetch(`${API}/console/jobs/${FAILED}/retry`, { method: 'POST', headers });
    assert.equal(act.status, 401, 'an action without the operator token');
  }
  assert.equal((await api('/v1/jobs', OPERATOR)).status, 401, 'an operator token opened /v1');
  const job = await api(`/v1/jobs/${FAILED}`);
  assert.equal(job.body.data.attributes.retry_count, 0, 'a refused action changed the job');
  await shot('login');
});

test('a wrong token does not log in; the operator token does, with a strict cookie', async () => {
  await page.type('#token', ORG);
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  assert.match(await page.$eval('[role=alert]', (e) => e.textContent), /not an active operator/);
  await page.type('#token', OPERATOR);
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  assert.equal(new URL(page.url()).pathname, '/console');
  assert.equal(await page.$eval('h1', (e) => e.textContent), 'Overview');
  const cookie = (await page.cookies()).find((c) => c.name === 'bulkreg_console');
  assert.ok(cookie, 'no console cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/console');
});

test('the overview shows the figures of the database and the broker, and refreshes', async () => {
  await page.goto(`${API}/console`);
  // Each figure against a query of its own, read until they agree (a figure may move).
  const checks = {
    jobs_in_flight: "SELECT count(*) FROM jobs WHERE status = 'processing'",
    dead_lettered: "SELECT count(*) FROM tasks WHERE status = 'failed' AND error_code = 'internal_error'",
    webhook_backlog: "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
    webhook_failed_day: "SELECT count(*) FROM webhook_deliveries WHERE status = 'failed' AND updated_at > now() - interval '1 day'",
  };
  for (const [key, q] of Object.entries(checks)) {
    const same = await until(async () => Number(await figure(key)) === sqlNumber(q));
    assert.ok(same, `${key}: page ${await figure(key)}, database ${sqlNumber(q)}`);
  }
  assert.ok(Number(await figure('dead_lettered')) >= 1, 'the dead-lettered task is counted');
  const metrics = await (await fetch(`${API}/metrics`)).text();
  const consumers = metrics.match(/bulkreg_queue_consumers\{queue="bulkreg\.tasks"\} (\d+)/);
  assert.ok(consumers, 'no consumer gauge in /metrics');
  assert.ok(await until(async () => (await figure('queues.tasks.consumers')) === consumers[1]),
    `consumers: page ${await figure('queues.tasks.consumers')}, /metrics ${consumers[1]}`);
  // Replicas: the management API's members of the queue, as /metrics reads them.
  for (const [key, series] of [['replicas', 'bulkreg_queue_members'], ['replicas_online', 'bulkreg_queue_members_online']]) {
    const m = metrics.match(new RegExp(`${series}\\{queue="bulkreg\\.tasks"\\} (\\d+)`));
    assert.ok(m, `no ${series} in /metrics`);
    assert.equal(await figure(`queues.tasks.${key}`), m[1], `${key}: page and /metrics differ`);
  }

  // The charts: 60 bars each, their sums those of the tasks finished in the hour.
  const first = await figure('now');
  assert.ok(await until(async () => (await figure('now')) !== first, 12000), 'no refresh');
  const bars = (id) => page.$$eval(`#${id} rect`, (rs) => rs.map((r) => Number(r.dataset.v)));
  assert.equal((await bars('chart-failed')).length, 60);
  assert.equal((await bars('chart-rate')).length, 60);
  const hour = "completed_at >= date_trunc('minute', now()) - interval '59 minutes'";
  const agree = await until(async () => {
    const failed = (await bars('chart-failed')).reduce((a, b) => a + b, 0);
    const all = Math.round((await bars('chart-rate')).reduce((a, b) => a + b, 0) * 60);
    return failed === sqlNumber(`SELECT count(*) FROM tasks WHERE status = 'failed' AND ${hour}`)
      && all === sqlNumber(`SELECT count(*) FROM tasks WHERE status IN ('succeeded', 'failed') AND ${hour}`)
      && failed >= 3;
  }, 15000);
  assert.ok(agree, 'the charts do not add up to the tasks of the last hour');

  const endpoints = await page.$eval('#endpoints', (e) => e.textContent);
  assert.ok(endpoints.includes(E.CONSOLE_HOOK_URL), `failing endpoints: ${endpoints}`);
  const procs = await page.$$eval('#processes tr', (rs) => rs.map((r) =>
    [...r.querySelectorAll('td')].map((t) => t.textContent)));
  const seen = JSON.stringify(procs);
  assert.ok(procs.some((r) => r[0].startsWith('bulkreg-api') && r[1] === 'ready'), seen);
  // The test's worker, by its metrics port, is ready.
  assert.ok(procs.some((r) => r[0].startsWith('bulkreg-worker') && r[1] === 'ready'
    && r[2] === `metrics port ${E.CONSOLE_WORKER_METRICS_PORT}`), seen);
  await shot('overview');
});

test('jobs of every organization: filters and search by id', async () => {
  await page.goto(`${API}/console/jobs?status=failed`);
  const statuses = await page.$$eval('tbody tr td:nth-child(4)', (ts) => ts.map((t) => t.textContent));
  assert.ok(statuses.length > 0);
  assert.ok(statuses.every((s) => s === 'failed'), statuses.join());
  await shot('jobs');
  await page.type('#q', FAILED);
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  assert.equal(new URL(page.url()).pathname, `/console/jobs/${FAILED}`);
});

test("a job's figures and task errors are the API's", async () => {
  await page.goto(`${API}/console/jobs/${FAILED}`);
  const job = (await api(`/v1/jobs/${FAILED}`)).body.data.attributes;
  const dd = await page.$$eval('dl.figures div', (ds) => Object.fromEntries(ds.map((d) =>
    [d.querySelector('dt').textContent, d.querySelector('dd').textContent])));
  assert.equal(dd.Status, job.status);
  assert.equal(Number(dd.Tasks), job.total_items);
  assert.equal(Number(dd.Succeeded), job.total_success);
  assert.equal(Number(dd.Failed), job.total_fail);
  const tasks = (await api(`/v1/jobs/${FAILED}/tasks?filter[status]=failed`)).body.data;
  await page.goto(`${API}/console/jobs/${FAILED}?status=failed`);
  const rows = await page.$$eval('section tbody tr', (rs) => rs.map((r) =>
    [...r.querySelectorAll('td')].map((t) => t.textContent)));
  assert.equal(rows.length, tasks.length);
  rows.forEach((r, i) => {
    assert.equal(Number(r[0]), tasks[i].index);
    assert.equal(r[4], tasks[i].errors[0].code);
    assert.equal(r[5], tasks[i].errors[0].message);
  });
  await shot('job');
});

test('the keyboard reaches "Retry failed tasks", and the retry runs', async () => {
  await page.goto(`${API}/console/jobs/${FAILED}`);
  let label = '';
  for (let i = 0; i < 40 && label !== 'Retry failed tasks'; i++) {
    await page.keyboard.press('Tab');
    label = await page.evaluate(() => document.activeElement.textContent);
  }
  assert.equal(label, 'Retry failed tasks', 'Tab never reached the retry button');
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  assert.match(await page.$eval('[role=status]', (e) => e.textContent), /queued again/);
  const job = (await api(`/v1/jobs/${FAILED}`)).body.data.attributes;
  assert.equal(job.retry_count, 1);
  // The worker runs the retried tasks again (they fail again: already registered).
  assert.ok(await until(async () =>
    (await api(`/v1/jobs/${FAILED}`)).body.data.attributes.status === 'failed', 20000));
});

test('a form without the page\'s CSRF token is refused', async () => {
  const status = await page.evaluate(async (id) => (await fetch(`/console/jobs/${id}/cancel`, {
    method: 'POST', body: new URLSearchParams({ csrf: 'f'.repeat(64) }),
  })).status, PROCESSING);
  assert.equal(status, 403);
  assert.equal(sql(`SELECT status FROM jobs WHERE id = '${PROCESSING}'`), 'processing');
});

test('cancel a processing job', async () => {
  await page.goto(`${API}/console/jobs/${PROCESSING}`);
  const button = await page.$('form[action$="/cancel"] button');
  assert.ok(button, 'no cancel button');
  await Promise.all([page.waitForNavigation(), button.click()]);
  assert.match(await page.$eval('[role=status]', (e) => e.textContent), /cancelled/);
  assert.equal(sql(`SELECT status || ' ' || total_cancelled FROM jobs WHERE id = '${PROCESSING}'`),
    'cancelled 3');
  assert.equal(await page.$eval('#job-status', (e) => e.textContent), 'cancelled');
});

test('dead letters list the dead-lettered tasks', async () => {
  await page.goto(`${API}/console/dead`);
  const links = await page.$$eval('tbody a', (as) => as.map((a) => a.getAttribute('href')));
  assert.equal(links.filter((h) => h.includes(E.CONSOLE_JOB_DEAD)).length, 1);
  await shot('dead-letters');
});

test('re-send a failed webhook delivery: one more attempt, same delivery', async () => {
  const hook = E.CONSOLE_HOOK_ID;
  const attempts = () => sqlNumber(`SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = '${hook}'`);
  const before = attempts();
  await page.goto(`${API}/console/webhooks`);
  const rows = await page.$$('tbody > tr');
  let target = null;
  for (const r of rows) {
    const text = await r.evaluate((e) => e.textContent);
    if (text.includes(E.CONSOLE_HOOK_URL) && text.includes('failed')) target = r;
  }
  assert.ok(target, 'no failed delivery of the endpoint listed');
  await target.$eval('details', (d) => { d.open = true; });
  await shot('webhooks');
  const button = await target.$('button');
  await Promise.all([page.waitForNavigation(), button.click()]);
  assert.ok(await until(() => attempts() === before + 1, 15000), 'no new attempt was made');
  const listed = await api(`/v1/webhooks/${hook}/deliveries?page[size]=100`);
  assert.equal(listed.body.data.length, before + 1, 'the API lists the new attempt');
});

test('pages work without JavaScript, except the charts', async () => {
  const nojs = await browser.newPage();
  nojs.on('request', (r) => requests.push(r.url()));
  await nojs.setJavaScriptEnabled(false);
  await nojs.goto(`${API}/console/jobs`);
  assert.ok((await nojs.$$('tbody tr')).length > 0);
  await nojs.goto(`${API}/console`);
  const inFlight = await nojs.$eval('[data-k="jobs_in_flight"]', (e) => e.textContent);
  assert.match(inFlight, /^\d+$/);
  assert.equal((await nojs.$$('#chart-rate rect')).length, 0);
  await nojs.close();
});

test('accessible structure: landmarks, labels, a skip link', async () => {
  for (const path of ['/console', '/console/jobs', `/console/jobs/${FAILED}`, '/console/webhooks']) {
    await page.goto(API + path);
    const report = await page.evaluate(() => ({
      main: !!document.querySelector('main'),
      nav: !!document.querySelector('nav[aria-label]'),
      lang: document.documentElement.lang,
      unlabelled: [...document.querySelectorAll('input:not([type=hidden]), select')]
        .filter((e) => e.labels.length === 0).map((e) => e.name),
      skip: document.querySelector('a.skip')?.getAttribute('href'),
    }));
    assert.deepEqual(report, { main: true, nav: true, lang: 'en', unlabelled: [], skip: '#main' },
      path);
  }
});

test('no request left the console\'s origin, and no script failed', () => {
  assert.ok(requests.length > 20);
  const outside = requests.filter((u) => !u.startsWith(`${API}/`));
  assert.deepEqual(outside, []);
  assert.deepEqual(pageErrors, []);
});
