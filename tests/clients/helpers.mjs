// helpers.mjs - shared setup for the client tests (not a test file itself).
//
// run_clients.py starts the mock regions and the gateway (lighttpd + aigw
// workers) and describes them in environment variables; the tests only read
// them. Run the tests through run_clients.py, never on their own.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

import OpenAI, { AzureOpenAI } from 'openai';

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run these tests through tests/clients/run_clients.py`);
  }
  return v;
}

export const env = {
  url: need('AIGW_URL'),
  db: need('AIGW_DB'),
  sqlite3: process.env.SQLITE3 || 'sqlite3',
  key: need('AIGW_KEY'),
  user: need('AIGW_USER'),
  limitedKey: need('AIGW_LIMITED_KEY'),
  limitedUser: need('AIGW_LIMITED_USER'),
  retryKey: need('AIGW_RETRY_KEY'),
  retryUser: need('AIGW_RETRY_USER'),
  retryWindowS: Number(need('AIGW_RETRY_WINDOW_S')),
  brokeKey: need('AIGW_BROKE_KEY'),
  aigwBin: need('AIGW_BIN'),
  aigwConfig: need('AIGW_CONFIG_PATH'),
  // [{name, url, expect_key}] for east, west, eu
  mocks: JSON.parse(need('MOCK_REGIONS')),
  // the gateway's backends by name (east priority 1, west priority 2)
  backends: JSON.parse(need('AIGW_BACKENDS')),
};

export const mock = Object.fromEntries(env.mocks.map((m) => [m.name, m]));

export const API_VERSION = '2024-10-21';
export const CHAT_MODEL = 'gpt-4o';
export const EMBED_MODEL = 'text-embedding-3-small';

// ---- clients, built exactly as an application would build them ----------

export function openaiClient(opts = {}) {
  return new OpenAI({
    baseURL: `${env.url}/v1`,
    apiKey: env.key,
    maxRetries: 0, // a failure shows as itself, not as a retry
    timeout: 20_000,
    ...opts,
  });
}

export function azureClient(opts = {}) {
  return new AzureOpenAI({
    endpoint: env.url,
    apiVersion: API_VERSION,
    deployment: CHAT_MODEL,
    apiKey: env.key,
    maxRetries: 0,
    timeout: 20_000,
    ...opts,
  });
}

// ---- the mock regions' control API ---------------------------------------

async function control(region, path, body) {
  const m = mock[region];
  assert.ok(m, `no mock region ${region}`);
  const init = body === undefined
    ? { method: 'GET' }
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
  const r = await fetch(m.url + path, init);
  const text = await r.text();
  assert.equal(r.status, 200, `mock ${region} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

export const mockConfig = (region, settings) => control(region, '/_mock/config', settings);
export const mockStats = (region) => control(region, '/_mock/stats');

/**
 * As conftest's MockRegion.reset(): defaults, then the backend key aigw must
 * send. The gateway's circuit breakers are closed again too, so that failures
 * injected by one test cannot steer the next one's traffic.
 */
export async function resetMocks() {
  for (const m of env.mocks) {
    await control(m.name, '/_mock/reset', {});
    await control(m.name, '/_mock/config', { expect_key: m.expect_key });
  }
  for (const name of env.backends) aigw('backend', 'reset', name);
}

/** Runs the aigw command line tool against the gateway's configuration. */
export function aigw(...args) {
  return execFileSync(env.aigwBin, ['--config', env.aigwConfig, ...args], { encoding: 'utf8' });
}

// ---- the gateway's database (read with the sqlite3 command line tool) ----

const SAFE = /^[A-Za-z0-9._:@-]+$/;

export function lit(v) {
  assert.match(String(v), SAFE, `refusing to put ${JSON.stringify(v)} into SQL`);
  return `'${v}'`;
}

export function sql(query) {
  const out = execFileSync(env.sqlite3, ['-json', '-cmd', '.timeout 5000', env.db, query], {
    encoding: 'utf8',
  });
  return out.trim() ? JSON.parse(out) : [];
}

export function budgetUsed(user) {
  const rows = sql(`SELECT coalesce(sum(used), 0) AS used FROM budget_usage WHERE user_id = ${lit(user)}`);
  return rows[0].used;
}

/** The audit row of one request, once it has left 'pending' (settled). */
export async function auditRow(requestId, waitMs = 3000) {
  assert.ok(requestId, 'the response carries no x-request-id header');
  const deadline = Date.now() + waitMs;
  for (;;) {
    const rows = sql(`SELECT * FROM audit_log WHERE request_id = ${lit(requestId)}`);
    if (rows.length && rows[0].status !== 'pending') return rows[0];
    if (Date.now() > deadline) {
      assert.fail(`audit row for ${requestId} not settled after ${waitMs} ms: ${JSON.stringify(rows)}`);
    }
    await sleep(50);
  }
}

export const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

/**
 * Consumes an SDK stream, recording when each chunk arrived (seconds since t0).
 * Returns {chunks: [{t, chunk}], total, content}.
 */
export async function consume(stream, t0) {
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push({ t: (performance.now() - t0) / 1000, chunk });
  }
  const total = (performance.now() - t0) / 1000;
  const content = chunks.map(({ chunk }) => chunk.choices?.[0]?.delta?.content ?? '').join('');
  return { chunks, total, content };
}

/**
 * Asserts the stream was relayed as the backend produced it: the first content
 * arrived early, and the content chunks arrived spread out in time rather than
 * all together at the end.
 */
export function assertIncremental({ chunks, total }, minDistinct = 4, gapS = 0.15) {
  const times = chunks.filter(({ chunk }) => chunk.choices?.[0]?.delta?.content).map(({ t }) => t);
  const detail = `content chunk arrival times ${JSON.stringify(times.map((t) => +t.toFixed(3)))} of ${total.toFixed(3)} s`;
  assert.ok(times.length >= minDistinct, `too few content chunks: ${detail}`);
  assert.ok(times[0] < 0.5 * total, `first content chunk arrived late (buffered?): ${detail}`);
  let distinct = 1;
  let last = times[0];
  for (const t of times.slice(1)) {
    if (t - last >= gapS) {
      distinct++;
      last = t;
    }
  }
  assert.ok(distinct >= minDistinct,
    `only ${distinct} content chunks arrived >= ${gapS} s apart (buffered?): ${detail}`);
}
