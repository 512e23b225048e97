// The official `AzureOpenAI` client against aigw's Azure-compatible routes
// (/openai/deployments/{deployment}/...?api-version=...), key in `api-key`.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import {
  API_VERSION, CHAT_MODEL, EMBED_MODEL, assertIncremental, auditRow, azureClient, budgetUsed,
  consume, env, mockConfig, mockStats, resetMocks,
} from './helpers.mjs';

const REPLY = 'alpha bravo charlie delta echo foxtrot golf hotel';
const PROMPT_TOKENS = 13;
const COMPLETION_TOKENS = 19;
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Spell eight words.' },
];

describe('AzureOpenAI client, /openai/deployments', () => {
  beforeEach(resetMocks);

  test('chat.completions.create returns the backend reply', async () => {
    const client = azureClient();
    const { data, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, max_tokens: 40 })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.choices[0].message.content, 'Hello from east');
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.ok(data.usage.total_tokens > 0);
    const row = await auditRow(response.headers.get('x-request-id'));
    assert.equal(row.status, 'success');
    assert.equal(row.user_id, env.user);
    assert.equal(row.model, CHAT_MODEL);
    assert.equal(row.deployment, 'gpt-4o-east');
    const st = await mockStats('east');
    assert.equal(st.by_path['/openai/deployments/gpt-4o-east/chat/completions'], 1);
    assert.match(st.last_query, new RegExp(`(^|&)api-version=${API_VERSION}(&|$)`));
    assert.equal(st.last_headers['api-key'], 'key-east-secret');
  });

  test('embeddings.create returns vectors (deployment text-embedding-3-small)', async () => {
    const client = azureClient({ deployment: EMBED_MODEL });
    const r = await client.embeddings.create({ model: EMBED_MODEL, input: 'hello world' });
    assert.equal(r.data.length, 1);
    const v = r.data[0].embedding;
    assert.equal(v.length, 8);
    assert.ok(v.every(Number.isFinite));
    assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-3);
    const st = await mockStats('east');
    assert.equal(st.by_path['/openai/deployments/emb-east/embeddings'], 1);
  });

  test('models.list returns the gateway models', async () => {
    const page = await azureClient().models.list();
    assert.deepEqual(page.data.map((m) => m.id).sort(), [CHAT_MODEL, EMBED_MODEL].sort());
  });

  test('stream without include_usage: relayed incrementally, no usage chunk, audited', async () => {
    await mockConfig('east', {
      reply: REPLY, stream_delay_s: 0.3,
      prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS,
    });
    const client = azureClient();
    const before = budgetUsed(env.user);
    const t0 = performance.now();
    const { data: stream, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, stream: true })
      .withResponse();
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const res = await consume(stream, t0);
    assert.equal(res.content, REPLY);
    assertIncremental(res);
    for (const { chunk } of res.chunks) {
      assert.ok(chunk.usage == null, `unexpected usage in ${JSON.stringify(chunk)}`);
    }
    assert.ok(res.chunks.some(({ chunk }) => chunk.choices[0]?.finish_reason === 'stop'));
    const row = await auditRow(response.headers.get('x-request-id'));
    assert.equal(row.status, 'success');
    assert.equal(row.stream, 1);
    assert.equal(row.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS);
    assert.equal(budgetUsed(env.user) - before, PROMPT_TOKENS + COMPLETION_TOKENS);
  });

  test('stream with include_usage: the final chunk carries usage', async () => {
    await mockConfig('east', {
      reply: REPLY, prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS,
    });
    const client = azureClient();
    const before = budgetUsed(env.user);
    const { data: stream, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const res = await consume(stream, performance.now());
    assert.equal(res.content, REPLY);
    const withUsage = res.chunks.filter(({ chunk }) => chunk.usage);
    assert.equal(withUsage.length, 1);
    assert.equal(withUsage[0], res.chunks.at(-1));
    assert.equal(withUsage[0].chunk.usage.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS);
    const row = await auditRow(response.headers.get('x-request-id'));
    assert.equal(row.status, 'success');
    assert.equal(row.stream, 1);
    assert.equal(row.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS);
    assert.equal(budgetUsed(env.user) - before, PROMPT_TOKENS + COMPLETION_TOKENS);
  });
});
