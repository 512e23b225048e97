// The OpenAI Responses API through aigw, with unchanged SDKs: the official
// `openai` client (OpenAI on /v1/responses, AzureOpenAI on
// /openai/responses?api-version=...) and the Vercel AI SDK, whose default
// OpenAI and Azure models call the Responses API.
//
// The requests each SDK call sends (method, path below the gateway URL, query):
//   openai responses.create               POST   /v1/responses            (stream: true in the body to stream)
//   openai responses.retrieve(id)         GET    /v1/responses/{id}
//   openai responses.delete(id)           DELETE /v1/responses/{id}
//   openai responses.inputItems.list(id)  GET    /v1/responses/{id}/input_items[?limit=&order=&after=]
//   AzureOpenAI (endpoint, apiVersion V)  the same calls on /openai/responses[/{id}[/input_items]]?api-version=V,
//                                         key in api-key (a `deployment` option does not change the path)
//   @ai-sdk/openai createOpenAI({baseURL: gw/v1})('gpt-4o')   POST /v1/responses, Bearer key
//   @ai-sdk/azure createAzure({baseURL: gw/openai})('gpt-4o') POST /openai/responses, no api-version
//                                         (on a host that is not *.openai.azure.com), key in api-key
//   ... with useDeploymentBasedUrls: true  POST /openai/deployments/gpt-4o/responses?api-version=v1
//                                         (api-version = the apiVersion option, default v1)
// generateText and streamText send the same request, streamText with "stream": true.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { createAzure } from '@ai-sdk/azure';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText } from 'ai';
import OpenAI from 'openai';

import {
  CHAT_MODEL, auditRow, azureClient, env, mockConfig, mockStats, openaiClient, resetMocks,
} from './helpers.mjs';

const EAST_REPLY = 'Hello from east';
const WEST_REPLY = 'Hello from west';
const REPLY = 'one two three four five six seven eight';
const INPUT_TOKENS = 23;
const OUTPUT_TOKENS = 31;
const RESPONSES_API_VERSION = '2025-04-01-preview';
const input = 'Count to eight, please.';
const tokens = { prompt_tokens: INPUT_TOKENS, completion_tokens: OUTPUT_TOKENS };

/** Asserts the audit row of a Responses API call. */
async function assertAudited(requestId, { stream = 0, backend = 'east' } = {}) {
  const row = await auditRow(requestId);
  assert.equal(row.operation, 'responses');
  assert.equal(row.status, 'success', `audit row ${JSON.stringify(row)}`);
  assert.equal(row.stream, stream);
  assert.equal(row.user_id, env.user);
  assert.equal(row.backend, backend);
  assert.equal(row.deployment, `${CHAT_MODEL}-${backend}`);
  return row;
}

/** Asserts the audit row's tokens are the ones the backend reported. */
function assertTokens(row, inputTokens = INPUT_TOKENS, outputTokens = OUTPUT_TOKENS) {
  assert.equal(row.prompt_tokens, inputTokens);
  assert.equal(row.completion_tokens, outputTokens);
  assert.equal(row.total_tokens, inputTokens + outputTokens);
}

/** Consumes a Responses API event stream, recording arrival times (seconds since t0). */
async function consumeEvents(stream, t0) {
  const events = [];
  for await (const ev of stream) events.push({ t: (performance.now() - t0) / 1000, ev });
  const text = events.filter(({ ev }) => ev.type === 'response.output_text.delta').map(({ ev }) => ev.delta).join('');
  return { events, text, total: (performance.now() - t0) / 1000 };
}

/** streamText, consumed to the end; a stream error fails the test instead of ending the text early. */
async function streamAll(options) {
  let failure;
  const result = streamText({ maxRetries: 0, ...options, onError: ({ error }) => { failure = error; } });
  let text = '';
  for await (const delta of result.textStream) text += delta;
  if (failure) throw failure;
  return { text, usage: await result.usage, response: await result.response };
}

const aiOpenAI = () => createOpenAI({ baseURL: `${env.url}/v1`, apiKey: env.key });
const aiAzure = (opts = {}) => createAzure({ baseURL: `${env.url}/openai`, apiKey: env.key, ...opts });

describe('Responses API, OpenAI client (/v1/responses)', () => {
  beforeEach(resetMocks);

  test('responses.create returns the backend reply and its usage, audited as responses', async () => {
    await mockConfig('east', tokens);
    const client = openaiClient();
    const { data, response } = await client.responses
      .create({ model: CHAT_MODEL, input, instructions: 'Answer briefly.', max_output_tokens: 50 })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.object, 'response');
    assert.equal(data.status, 'completed');
    assert.match(data.id, /^resp_/);
    assert.equal(data.output_text, EAST_REPLY);
    assert.equal(data.output[0].type, 'message');
    assert.equal(data.output[0].role, 'assistant');
    assert.equal(data.usage.input_tokens, INPUT_TOKENS);
    assert.equal(data.usage.output_tokens, OUTPUT_TOKENS);
    assert.equal(data.usage.total_tokens, INPUT_TOKENS + OUTPUT_TOKENS);
    const rid = response.headers.get('x-request-id');
    assert.equal(data._request_id, rid);
    for (const h of ['x-ms-region', 'x-ms-request-id', 'apim-request-id']) {
      assert.equal(response.headers.get(h), null, `${h} leaked to the client`);
    }
    assertTokens(await assertAudited(rid));
    // The Azure backend got its deployment as the model, and its own key.
    const st = await mockStats('east');
    assert.equal(st.last_body.model, `${CHAT_MODEL}-east`);
    assert.equal(st.last_body.input, input);
    assert.equal(st.last_headers['api-key'], 'key-east-secret');
    assert.ok(!JSON.stringify(st.last_headers).includes(env.key), 'the gateway key reached the backend');
  });

  test('a streamed responses.create relays the typed events up to response.completed, audited', async () => {
    await mockConfig('east', { reply: REPLY, stream_delay_s: 0.3, ...tokens });
    const client = openaiClient();
    const t0 = performance.now();
    const { data: stream, response } = await client.responses
      .create({ model: CHAT_MODEL, input, stream: true })
      .withResponse();
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const { events, text, total } = await consumeEvents(stream, t0);
    assert.equal(text, REPLY);
    const types = events.map(({ ev }) => ev.type);
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    for (const t of ['response.output_text.done', 'response.output_item.done']) assert.ok(types.includes(t), `no ${t}`);
    const seq = events.map(({ ev }) => ev.sequence_number);
    assert.deepEqual(seq, [...seq].sort((a, b) => a - b), 'sequence numbers out of order');
    const done = events.at(-1).ev.response;
    assert.equal(done.status, 'completed');
    assert.equal(done.usage.input_tokens, INPUT_TOKENS);
    assert.equal(done.usage.output_tokens, OUTPUT_TOKENS);
    // Relayed as produced, not buffered to the end.
    const times = events.filter(({ ev }) => ev.type === 'response.output_text.delta').map(({ t }) => t);
    const detail = `delta arrival times ${JSON.stringify(times.map((t) => +t.toFixed(3)))} of ${total.toFixed(3)} s`;
    assert.ok(times.length >= 8, detail);
    assert.ok(times[0] < 0.5 * total, `first delta arrived late (buffered?): ${detail}`);
    assert.ok(times.at(-1) - times[0] >= 1.0, `deltas arrived together (buffered?): ${detail}`);
    assertTokens(await assertAudited(response.headers.get('x-request-id'), { stream: 1 }));
  });

  test('responses.retrieve, inputItems.list and delete reach the stored response', async () => {
    const client = openaiClient();
    const created = await client.responses.create({ model: CHAT_MODEL, input });
    const got = await client.responses.retrieve(created.id);
    assert.equal(got.id, created.id);
    assert.equal(got.status, 'completed');
    assert.equal(got.output_text, EAST_REPLY);
    const items = await client.responses.inputItems.list(created.id);
    assert.equal(items.data.length, 1);
    assert.equal(items.data[0].role, 'user');
    assert.deepEqual(items.data[0].content, [{ type: 'input_text', text: input }]);
    const deleted = await client.responses.delete(created.id);
    assert.equal(deleted.id, created.id);
    assert.equal(deleted.deleted, true);
    await assert.rejects(client.responses.retrieve(created.id), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `expected NotFoundError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      return true;
    });
  });

  test('a previous_response_id follow-up continues the conversation', async () => {
    const client = openaiClient();
    const first = await client.responses.create({ model: CHAT_MODEL, input });
    const { data: next, response } = await client.responses
      .create({ model: CHAT_MODEL, input: 'And now backwards.', previous_response_id: first.id })
      .withResponse();
    assert.equal(next.status, 'completed');
    assert.equal(next.output_text, EAST_REPLY);
    assert.equal(next.previous_response_id, first.id);
    assert.notEqual(next.id, first.id);
    await assertAudited(response.headers.get('x-request-id'));
    // An id no region knows is the backend's own 400.
    await assert.rejects(
      client.responses.create({ model: CHAT_MODEL, input, previous_response_id: 'resp_unknown0000000000000000000' }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 400);
        assert.equal(err.param, 'previous_response_id');
        assert.equal(err.code, 'previous_response_not_found');
        return true;
      },
    );
  });

  test('after a failover, the follow-up goes to the region that holds the response', async () => {
    await mockConfig('east', { mode: '500' });
    const client = openaiClient();
    const { data: first, response } = await client.responses.create({ model: CHAT_MODEL, input }).withResponse();
    assert.equal(first.output_text, WEST_REPLY);
    const firstRow = await assertAudited(response.headers.get('x-request-id'), { backend: 'west' });
    assert.ok(firstRow.attempts >= 2, `attempts ${firstRow.attempts}`);
    // East is healthy again; it has never seen this response and would answer
    // previous_response_not_found.
    await mockConfig('east', { mode: 'ok' });
    const eastBefore = (await mockStats('east')).requests;
    const { data: next, response: nextResponse } = await client.responses
      .create({ model: CHAT_MODEL, input: 'And now backwards.', previous_response_id: first.id })
      .withResponse();
    assert.equal(next.output_text, WEST_REPLY);
    assert.equal(next.previous_response_id, first.id);
    await assertAudited(nextResponse.headers.get('x-request-id'), { backend: 'west' });
    // Reading it back goes to west as well.
    assert.equal((await client.responses.retrieve(first.id)).output_text, WEST_REPLY);
    assert.equal((await mockStats('east')).requests, eastBefore, 'a call about a west response went to east');
  });

  test('AzureOpenAI responses.create and retrieve (/openai/responses?api-version=...)', async () => {
    await mockConfig('east', tokens);
    const client = azureClient({ apiVersion: RESPONSES_API_VERSION });
    const { data, response } = await client.responses.create({ model: CHAT_MODEL, input }).withResponse();
    assert.equal(data.output_text, EAST_REPLY);
    assert.equal(data.usage.input_tokens, INPUT_TOKENS);
    assertTokens(await assertAudited(response.headers.get('x-request-id')));
    const got = await client.responses.retrieve(data.id);
    assert.equal(got.id, data.id);
    assert.equal(got.output_text, EAST_REPLY);
  });
});

describe('Responses API, Vercel AI SDK', () => {
  beforeEach(resetMocks);

  test('createOpenAI: generateText', async () => {
    await mockConfig('east', tokens);
    const r = await generateText({ model: aiOpenAI()(CHAT_MODEL), prompt: input, maxRetries: 0 });
    assert.equal(r.text, EAST_REPLY);
    assert.equal(r.usage.inputTokens, INPUT_TOKENS);
    assert.equal(r.usage.outputTokens, OUTPUT_TOKENS);
    assert.match(r.response.id, /^resp_/);
    assertTokens(await assertAudited(r.response.headers['x-request-id']));
  });

  test('createOpenAI: streamText', async () => {
    await mockConfig('east', { reply: REPLY, ...tokens });
    const r = await streamAll({ model: aiOpenAI()(CHAT_MODEL), prompt: input });
    assert.equal(r.text, REPLY);
    assert.equal(r.usage.inputTokens, INPUT_TOKENS);
    assert.equal(r.usage.outputTokens, OUTPUT_TOKENS);
    assertTokens(await assertAudited(r.response.headers['x-request-id'], { stream: 1 }));
  });

  test('createAzure (baseURL /openai): generateText and streamText', async () => {
    await mockConfig('east', { reply: REPLY, ...tokens });
    const model = aiAzure()(CHAT_MODEL);
    const g = await generateText({ model, prompt: input, maxRetries: 0 });
    assert.equal(g.text, REPLY);
    assert.equal(g.usage.inputTokens, INPUT_TOKENS);
    assert.equal(g.usage.outputTokens, OUTPUT_TOKENS);
    assertTokens(await assertAudited(g.response.headers['x-request-id']));
    const s = await streamAll({ model, prompt: input });
    assert.equal(s.text, REPLY);
    assert.equal(s.usage.inputTokens, INPUT_TOKENS);
    assert.equal(s.usage.outputTokens, OUTPUT_TOKENS);
    assertTokens(await assertAudited(s.response.headers['x-request-id'], { stream: 1 }));
  });

  test('createAzure with useDeploymentBasedUrls: generateText and streamText', async () => {
    await mockConfig('east', { reply: REPLY, ...tokens });
    const model = aiAzure({ useDeploymentBasedUrls: true })(CHAT_MODEL);
    const g = await generateText({ model, prompt: input, maxRetries: 0 });
    assert.equal(g.text, REPLY);
    assert.equal(g.usage.outputTokens, OUTPUT_TOKENS);
    assertTokens(await assertAudited(g.response.headers['x-request-id']));
    const s = await streamAll({ model, prompt: input });
    assert.equal(s.text, REPLY);
    assert.equal(s.usage.inputTokens, INPUT_TOKENS);
    assertTokens(await assertAudited(s.response.headers['x-request-id'], { stream: 1 }));
  });
});
