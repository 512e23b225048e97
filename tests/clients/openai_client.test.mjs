// The official `OpenAI` client against aigw's OpenAI-compatible routes (/v1/...).
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  CHAT_MODEL, EMBED_MODEL, assertIncremental, auditRow, budgetUsed, consume, env, mockConfig,
  mockStats, openaiClient, resetMocks,
} from './helpers.mjs';

const REPLY = 'one two three four five six seven eight';
const PROMPT_TOKENS = 11;
const COMPLETION_TOKENS = 17;
const messages = [{ role: 'user', content: 'Count to eight, please.' }];

describe('OpenAI client, /v1', () => {
  beforeEach(resetMocks);

  test('chat.completions.create returns the backend reply', async () => {
    const client = openaiClient();
    const { data, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, temperature: 0.2, max_tokens: 50 })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, 'Hello from east');
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.ok(data.usage.total_tokens > 0);
    // aigw's own headers; backend-internal ones never reach the client.
    const rid = response.headers.get('x-request-id');
    assert.ok(rid);
    assert.equal(data._request_id, rid);
    for (const h of ['x-ms-region', 'x-ms-request-id', 'apim-request-id']) {
      assert.equal(response.headers.get(h), null, `${h} leaked to the client`);
    }
    const row = await auditRow(rid);
    assert.equal(row.status, 'success');
    assert.equal(row.stream, 0);
    assert.equal(row.user_id, env.user);
    assert.equal(row.backend, 'east');
    assert.equal(row.deployment, 'gpt-4o-east');
    assert.equal(row.total_tokens, data.usage.total_tokens);
    // The client's key stays at the gateway; the backend gets its own.
    const last = (await mockStats('east')).last_headers;
    assert.equal(last['api-key'], 'key-east-secret');
    assert.equal(last.authorization, undefined);
    assert.ok(!JSON.stringify(last).includes(env.key), 'the gateway key reached the backend');
  });

  test('the /openai/v1 base path works too', async () => {
    const client = openaiClient({ baseURL: `${env.url}/openai/v1` });
    const r = await client.chat.completions.create({ model: CHAT_MODEL, messages });
    assert.equal(r.choices[0].message.content, 'Hello from east');
  });

  test('content parts and the developer role are accepted', async () => {
    const client = openaiClient();
    const r = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: [
        { role: 'developer', content: [{ type: 'text', text: 'Be brief.' }] },
        { role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: 'again' }] },
      ],
      max_completion_tokens: 20,
    });
    assert.equal(r.choices[0].message.content, 'Hello from east');
    const sent = (await mockStats('east')).last_body;
    assert.deepEqual(sent.messages[1].content, [{ type: 'text', text: 'Hello' }, { type: 'text', text: 'again' }]);
  });

  test('a secret in the answer is redacted, also when split across stream chunks', async () => {
    const secret = `sk-${'A1b2C3d4'.repeat(6)}`;
    await mockConfig('east', { reply: `the key is ${secret} - keep it safe`, stream_chunks: 9 });
    const client = openaiClient();
    const plain = (await client.chat.completions.create({ model: CHAT_MODEL, messages }))
      .choices[0].message.content;
    const streamed = (await consume(
      await client.chat.completions.create({ model: CHAT_MODEL, messages, stream: true }), performance.now(),
    )).content;
    for (const text of [plain, streamed]) {
      assert.ok(!text.includes('A1b2C3d4'), `secret reached the client: ${text}`);
      assert.match(text, /^the key is .+ - keep it safe$/);
    }
    assert.equal(streamed, plain);
  });

  test('embeddings.create returns vectors', async () => {
    const client = openaiClient();
    const r = await client.embeddings.create({ model: EMBED_MODEL, input: ['alpha', 'beta'] });
    assert.equal(r.object, 'list');
    assert.equal(r.data.length, 2);
    for (const [i, e] of r.data.entries()) {
      assert.equal(e.index, i);
      assert.ok(Array.isArray(e.embedding), 'embedding is an array of numbers');
      assert.equal(e.embedding.length, 8);
      assert.ok(e.embedding.every(Number.isFinite));
      const norm = Math.hypot(...e.embedding);
      assert.ok(Math.abs(norm - 1) < 1e-3, `unit vector expected, norm ${norm}`);
    }
    assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
    assert.ok(r.usage.prompt_tokens > 0);
    // The same call asking for floats and a size.
    const f = await client.embeddings.create({
      model: EMBED_MODEL, input: 'alpha', encoding_format: 'float', dimensions: 16,
    });
    assert.equal(f.data[0].embedding.length, 16);
    assert.equal((await mockStats('east')).by_path['/openai/deployments/emb-east/embeddings'], 2);
  });

  test('models.list returns the gateway models', async () => {
    const client = openaiClient();
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id).sort();
    assert.deepEqual(ids, [CHAT_MODEL, EMBED_MODEL].sort());
    const all = [];
    for await (const m of client.models.list()) all.push(m.id);
    assert.deepEqual(all.sort(), ids);
    assert.equal((await mockStats('east')).requests, 0, 'models are listed by the gateway itself');
  });

  test('a failing primary region is invisible to the SDK (failover to west)', async () => {
    await mockConfig('east', { mode: '500' });
    const client = openaiClient();
    const r = await client.chat.completions.create({ model: CHAT_MODEL, messages }).withResponse();
    assert.equal(r.data.choices[0].message.content, 'Hello from west');
    const row = await auditRow(r.response.headers.get('x-request-id'));
    assert.equal(row.backend, 'west');
    assert.ok(row.attempts >= 2, `attempts ${row.attempts}`);
  });

  test('stream with include_usage: relayed incrementally, final usage chunk, audited', async () => {
    await mockConfig('east', {
      reply: REPLY, stream_delay_s: 0.3,
      prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS,
    });
    const client = openaiClient();
    const before = budgetUsed(env.user);
    const t0 = performance.now();
    const { data: stream, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, stream: true, stream_options: { include_usage: true } })
      .withResponse();
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const res = await consume(stream, t0);
    assert.equal(res.content, REPLY);
    assertIncremental(res);
    // Azure backends open with a prompt-filter chunk (no choices, empty object); all others are
    // ordinary chunks.
    for (const { chunk } of res.chunks.filter(({ chunk }) => chunk.choices.length)) {
      assert.equal(chunk.object, 'chat.completion.chunk');
    }
    assert.ok(res.chunks.some(({ chunk }) => chunk.choices[0]?.finish_reason === 'stop'));
    // The usage chunk comes last, with no choices.
    const withUsage = res.chunks.filter(({ chunk }) => chunk.usage);
    assert.equal(withUsage.length, 1, 'exactly one chunk carries usage');
    const last = res.chunks.at(-1).chunk;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, {
      prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS,
      total_tokens: PROMPT_TOKENS + COMPLETION_TOKENS,
    });
    const row = await auditRow(response.headers.get('x-request-id'));
    assert.equal(row.status, 'success');
    assert.equal(row.stream, 1);
    assert.equal(row.prompt_tokens, PROMPT_TOKENS);
    assert.equal(row.completion_tokens, COMPLETION_TOKENS);
    assert.equal(row.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS);
    assert.equal(budgetUsed(env.user) - before, PROMPT_TOKENS + COMPLETION_TOKENS);
  });

  test('stream without include_usage: no chunk carries usage, tokens still counted', async () => {
    await mockConfig('east', {
      reply: REPLY, prompt_tokens: PROMPT_TOKENS, completion_tokens: COMPLETION_TOKENS,
    });
    const client = openaiClient();
    const before = budgetUsed(env.user);
    const { data: stream, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages, stream: true })
      .withResponse();
    const res = await consume(stream, performance.now());
    assert.equal(res.content, REPLY);
    for (const { chunk } of res.chunks) {
      assert.ok(chunk.usage == null, `unexpected usage in ${JSON.stringify(chunk)}`);
    }
    // aigw asked the backend for usage on its own behalf.
    assert.deepEqual((await mockStats('east')).last_body.stream_options, { include_usage: true });
    const row = await auditRow(response.headers.get('x-request-id'));
    assert.equal(row.status, 'success');
    assert.equal(row.stream, 1);
    assert.equal(row.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS);
    assert.equal(budgetUsed(env.user) - before, PROMPT_TOKENS + COMPLETION_TOKENS);
  });

  test('the SDK stream helper assembles the final completion', async () => {
    await mockConfig('east', { reply: REPLY });
    const client = openaiClient();
    const runner = client.chat.completions.stream({ model: CHAT_MODEL, messages });
    const deltas = [];
    runner.on('content', (delta) => deltas.push(delta));
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, REPLY);
    assert.equal(deltas.join(''), REPLY);
    assert.ok(deltas.length >= 8);
  });

  test('a stream broken after its first byte surfaces as an APIError from the iterator', async () => {
    await mockConfig('east', { reply: REPLY, mode: 'stream_break' });
    const client = openaiClient();
    const stream = await client.chat.completions.create({ model: CHAT_MODEL, messages, stream: true });
    let content = '';
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? '';
      })(),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
        assert.equal(err.code, 'backend_error');
        return true;
      },
    );
    assert.ok(content.length > 0 && REPLY.startsWith(content), `content before the break: ${content}`);
  });
});
