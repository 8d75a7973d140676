// streamChat with an injected fetch: exact control over reads, drops and responses.
// (tests/js/gateway.test.mjs runs the same paths against a real gateway.)
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { APIError, frameBatcher, streamChat } from '../../src/tokenrelay/web/tokenrelay.js';
import { collect } from './helpers.mjs';

const enc = new TextEncoder();

/** @param {string} content @param {object} [extra] */
const chunk = (content, extra = {}) =>
  JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: null }], ...extra });

/**
 * SSE frames numbered `id: s:<seq>` (seq from `first`), one per text.
 * @param {string[]} texts
 * @param {number} [first]
 */
const frames = (texts, first = 1) => texts.map((t, i) => `id: s:${first + i}\ndata: ${chunk(t)}\n\n`);
const DONE = (/** @type {number} */ seq) => `id: s:${seq}\ndata: [DONE]\n\n`;

/**
 * A streaming Response whose body yields `pieces` one read each, then ends the way `end`
 * says: 'close' (a clean end), or 'error' (a network failure while reading).
 * @param {Array<string | Uint8Array>} pieces
 * @param {{end?: 'close' | 'error', headers?: Record<string, string>, status?: number}} [options]
 */
function sse(pieces, { end = 'close', headers = { 'X-Stream-Id': 's' }, status = 200 } = {}) {
  const queue = pieces.map((p) => (typeof p === 'string' ? enc.encode(p) : p));
  const body = new ReadableStream({
    pull(controller) {
      const next = queue.shift();
      if (next) controller.enqueue(next);
      else if (end === 'error') controller.error(new TypeError('network error'));
      else controller.close();
    },
  });
  return new Response(body, { status, headers: { 'Content-Type': 'text/event-stream', ...headers } });
}

/**
 * A fetch that answers from a list of handlers, in order, and records every call.
 * @param {Array<(url: string, init: RequestInit) => Response | Promise<Response>>} handlers
 */
function fakeFetch(handlers) {
  /** @type {Array<{url: string, init: RequestInit}>} */
  const calls = [];
  /** @param {string} url @param {RequestInit} init */
  const fetch = async (url, init = {}) => {
    calls.push({ url, init });
    if (url.endsWith('/cancel')) return new Response('{}', { status: 200 });
    const handler = handlers.shift();
    if (!handler) throw new Error(`unexpected request ${url}`);
    return handler(url, init);
  };
  return { fetch: /** @type {typeof globalThis.fetch} */ (/** @type {unknown} */ (fetch)), calls };
}

/** @param {Record<string, unknown>} options */
const run = (options) => streamChat({ baseUrl: 'http://gw/v1', model: 'm', messages: [{ role: 'user', content: 'hi' }], retryDelay: 1, ...options });

test('chunks become typed events; the request is a streaming OpenAI request', async () => {
  const body = [
    `data: ${JSON.stringify({ choices: [{ index: 0, delta: { role: 'assistant', reasoning_content: 'think' } }] })}\n\n`,
    `data: ${chunk('Hel')}\n\n`,
    `data: ${chunk('lo')}\n\n`,
    `data: ${JSON.stringify({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'c1', function: { name: 'f', arguments: '{"a"' } }] } }] })}\n\n`,
    `data: ${JSON.stringify({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: ':1}' } }] } }] })}\n\n`,
    `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] })}\n\n`,
    `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } })}\n\n`,
    'data: [DONE]\n\n',
  ];
  const { fetch, calls } = fakeFetch([() => sse(body, { headers: {} })]);
  const { events } = await collect(run({ fetch, apiKey: 'k', temperature: 0.5 }));
  assert.deepEqual(events, [
    { type: 'reasoning', text: 'think', choice: 0 },
    { type: 'text', text: 'Hel', choice: 0 },
    { type: 'text', text: 'lo', choice: 0 },
    { type: 'tool_call', index: 0, id: 'c1', name: 'f', arguments: '{"a"', choice: 0 },
    { type: 'tool_call', index: 0, arguments: ':1}', choice: 0 },
    { type: 'finish', reason: 'tool_calls', choice: 0 },
    { type: 'usage', usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } },
  ]);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, 'http://gw/v1/chat/completions');
  const sent = JSON.parse(String(calls[0].init.body));
  assert.deepEqual(sent, { model: 'm', messages: [{ role: 'user', content: 'hi' }], stream_options: { include_usage: true }, temperature: 0.5, stream: true });
  const headers = /** @type {Record<string, string>} */ (calls[0].init.headers);
  assert.equal(headers.Authorization, 'Bearer k');
});

test('multi-byte characters split across reads arrive whole', async () => {
  const text = '你好, world 🌍 ünï';
  const bytes = enc.encode(`data: ${chunk(text)}\n\ndata: [DONE]\n\n`);
  const pieces = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  const { fetch } = fakeFetch([() => sse(pieces)]);
  assert.equal((await collect(run({ fetch }))).text, text);
});

test('a drop mid-frame resumes with Last-Event-ID; frames already seen are skipped', async () => {
  const first = frames(['a ', 'b ', 'c ']);
  const cut = `${first[2]}${frames(['d '], 4)[0]}`.slice(0, first[2].length + 12); // frame 4 cut short
  /** @type {Array<{attempt: number, streamId: string, lastEventId: string | null}>} */
  const reconnects = [];
  const { fetch, calls } = fakeFetch([
    () => sse([first[0], first[1], cut], { end: 'error' }),
    // The server sends from frame 2 on (an overlap the client must drop).
    () => sse([...frames(['b ', 'c ', 'd ', 'e'], 2), DONE(6)]),
  ]);
  const { text } = await collect(run({ fetch, onReconnect: (/** @type {any} */ info) => reconnects.push(info) }));
  assert.equal(text, 'a b c d e');
  assert.equal(calls[1].url, 'http://gw/v1/streams/s');
  assert.equal(calls[1].init.method, 'GET');
  assert.equal(/** @type {Record<string, string>} */ (calls[1].init.headers)['Last-Event-ID'], 's:3');
  assert.deepEqual(reconnects, [{ attempt: 1, streamId: 's', lastEventId: 's:3' }]);
  assert.ok(!calls.some((c) => c.url.endsWith('/cancel')), 'a finished stream is not cancelled');
});

test('a body that ends without [DONE] is a drop too; several drops in a row are fine', async () => {
  const { fetch, calls } = fakeFetch([
    () => sse(frames(['a ']), { end: 'close' }),
    () => sse(frames(['b '], 2), { end: 'error' }),
    () => sse([...frames(['c'], 3), DONE(4)]),
  ]);
  assert.equal((await collect(run({ fetch }))).text, 'a b c');
  assert.deepEqual(
    calls.map((c) => /** @type {Record<string, string>} */ (c.init.headers)['Last-Event-ID'] ?? null),
    [null, 's:1', 's:2'],
  );
});

test('a drop before any frame re-attaches from the start (?after=0)', async () => {
  const { fetch, calls } = fakeFetch([() => sse([': ping\n\n'], { end: 'error' }), () => sse([...frames(['x']), DONE(2)])]);
  assert.equal((await collect(run({ fetch }))).text, 'x');
  assert.equal(calls[1].url, 'http://gw/v1/streams/s?after=0');
});

test('resume refused (410): an error event, then the end', async () => {
  const gone = () => new Response(JSON.stringify({ error: { message: 'expired', type: 'gone', code: 'stream_gone' } }), { status: 410 });
  const { fetch } = fakeFetch([() => sse(frames(['a ']), { end: 'error' }), gone]);
  const { events } = await collect(run({ fetch }));
  assert.deepEqual(events.map((e) => e.type), ['text', 'error']);
  assert.equal(events[1].error.code, 'resume_failed');
  assert.equal(events[1].error.status, 410);
});

test('resume retries are bounded, with backoff, and transient failures are retried', async () => {
  const failing = () => Promise.reject(new TypeError('connection refused'));
  const unavailable = () => new Response('{}', { status: 503 });
  const { fetch, calls } = fakeFetch([() => sse(frames(['a ']), { end: 'error' }), failing, unavailable, failing]);
  const started = performance.now();
  const { events } = await collect(run({ fetch, maxRetries: 3, retryDelay: 20 }));
  const requests = calls.filter((c) => !c.url.endsWith('/cancel'));
  assert.equal(requests.length, 4, 'one request and three attempts');
  assert.equal(events.at(-1).type, 'error');
  assert.equal(events.at(-1).error.code, 'connection_lost');
  assert.equal(calls.length - requests.length, 1, 'having given up, it asks the gateway to stop');
  assert.ok(performance.now() - started >= 10 + 20 + 40 - 5, 'backoff grows');
});

test("the server's retry: value is the backoff base unless retryDelay is given", async () => {
  // retry: 1000 backs off 500..1000 ms, retryDelay 1 backs off 0.5..1 ms: bounds wide
  // apart, so a stall on a loaded machine cannot make one look like the other.
  for (const [retryDelay, min, max] of [[undefined, 500, 5000], [1, 0, 400]]) {
    let lastRead = 0;
    let waited = -1; // from the last read of the dropped connection to the resume request
    const { fetch, calls } = fakeFetch([
      () => sse(['retry: 1000\n\n', ...frames(['a '])], { end: 'error' }),
      () => {
        waited = performance.now() - lastRead;
        return sse([...frames(['b'], 2), DONE(3)]);
      },
    ]);
    const options = { fetch, retryDelay, onRaw: () => waited < 0 && (lastRead = performance.now()) };
    assert.equal((await collect(run(options))).text, 'a b');
    assert.equal(calls.length, 2);
    assert.ok(waited >= min && waited < max, `waited ${waited} ms (retryDelay ${retryDelay})`);
  }
});

test('without a stream id a drop cannot resume: an error event', async () => {
  const { fetch, calls } = fakeFetch([() => sse([`data: ${chunk('a')}\n\n`], { end: 'error', headers: {} })]);
  const { events } = await collect(run({ fetch }));
  assert.deepEqual(events.map((e) => e.type), ['text', 'error']);
  assert.equal(calls.length, 1);
});

test('abort stops reading at once and calls the cancel route once', async () => {
  const controller = new AbortController();
  // A body that never ends by itself.
  const endless = () => {
    let seq = 0;
    const body = new ReadableStream({
      async pull(c) {
        await new Promise((ok) => setTimeout(ok, 5));
        seq += 1;
        c.enqueue(enc.encode(frames([`w${seq} `], seq)[0]));
      },
    });
    return new Response(body, { headers: { 'X-Stream-Id': 's/1' } });
  };
  const { fetch, calls } = fakeFetch([endless]);
  let count = 0;
  for await (const event of run({ fetch, signal: controller.signal, apiKey: 'k' })) {
    if (event.type === 'text') count += 1;
    if (count === 3) controller.abort();
    assert.ok(count <= 3, 'no event after the abort');
  }
  const cancels = calls.filter((c) => c.url.endsWith('/cancel'));
  assert.equal(cancels.length, 1);
  assert.equal(cancels[0].url, 'http://gw/v1/streams/s%2F1/cancel');
  assert.equal(cancels[0].init.method, 'POST');
  assert.equal(/** @type {Record<string, string>} */ (cancels[0].init.headers).Authorization, 'Bearer k');
});

test('leaving the loop early cancels too; a finished stream is not cancelled', async () => {
  const { fetch, calls } = fakeFetch([() => sse([...frames(['a ', 'b ', 'c']), DONE(4)])]);
  for await (const event of run({ fetch })) {
    if (event.type === 'text') break;
  }
  assert.equal(calls.filter((c) => c.url.endsWith('/cancel')).length, 1);

  const done = fakeFetch([() => sse([...frames(['a']), DONE(2)])]);
  await collect(run({ fetch: done.fetch }));
  assert.equal(done.calls.filter((c) => c.url.endsWith('/cancel')).length, 0);
});

test('an error before the stream is thrown as APIError with status, code and request id', async () => {
  const refuse = () =>
    new Response(JSON.stringify({ error: { message: 'no such model', type: 'not_found', param: 'model', code: 'model_not_found' } }), {
      status: 404,
      headers: { 'X-Request-Id': 'req_1' },
    });
  const { fetch } = fakeFetch([refuse]);
  await assert.rejects(collect(run({ fetch })), (err) => {
    assert.ok(err instanceof APIError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.param, 'model');
    assert.equal(err.requestId, 'req_1');
    assert.equal(err.message, 'no such model');
    return true;
  });
});

test('an in-band error frame is an error event and ends the stream without resuming', async () => {
  const body = [...frames(['a ']), `id: s:2\ndata: ${JSON.stringify({ error: { message: 'upstream failed', type: 'upstream_error', code: null } })}\n\n`];
  const { fetch, calls } = fakeFetch([() => sse(body, { end: 'close' })]);
  const { events } = await collect(run({ fetch }));
  assert.deepEqual(events.map((e) => e.type), ['text', 'error']);
  assert.equal(events[1].error.message, 'upstream failed');
  assert.equal(calls.length, 1);
});

test('going offline drops the connection; back online it resumes, spending no attempt while offline', async () => {
  const network = Object.assign(new EventTarget(), { onLine: true });
  // The first response goes on until its connection is aborted (like a real fetch).
  const endless = (/** @type {string} */ _url, /** @type {RequestInit} */ init) => {
    let seq = 0;
    const body = new ReadableStream({
      async pull(c) {
        await new Promise((ok) => setTimeout(ok, 5));
        if (init.signal?.aborted) return c.error(new DOMException('aborted', 'AbortError'));
        seq += 1;
        c.enqueue(enc.encode(frames([`w${seq} `], seq)[0]));
      },
    });
    return new Response(body, { headers: { 'X-Stream-Id': 's' } });
  };
  /** @type {number[]} */
  const seen = [];
  const { fetch, calls } = fakeFetch([
    endless,
    // resumed: the server continues after the last frame the client saw
    () => sse([...frames(['w4 ', 'w5'], 4), DONE(6)]),
  ]);
  let text = '';
  let reconnects = 0;
  for await (const event of run({ fetch, network, maxRetries: 1, onReconnect: () => (reconnects += 1) })) {
    if (event.type !== 'text') continue;
    text += event.text;
    seen.push(Number(event.text.trim().slice(1)));
    if (seen.length === 3) {
      network.onLine = false;
      network.dispatchEvent(new Event('offline'));
      setTimeout(() => {
        assert.equal(calls.length, 1, 'no request while offline');
        network.onLine = true;
        network.dispatchEvent(new Event('online'));
      }, 100);
    }
  }
  assert.equal(text, 'w1 w2 w3 w4 w5');
  assert.equal(reconnects, 1);
  assert.equal(/** @type {Record<string, string>} */ (calls[1].init.headers)['Last-Event-ID'], 's:3');
});

test('an already aborted signal makes no request', async () => {
  const controller = new AbortController();
  controller.abort();
  const { fetch, calls } = fakeFetch([]);
  assert.deepEqual((await collect(run({ fetch, signal: controller.signal }))).events, []);
  assert.equal(calls.length, 0);
});

test('frameBatcher renders once per frame with everything queued, flush renders now', () => {
  /** @type {Array<() => void>} */
  const scheduled = [];
  /** @type {number[][]} */
  const renders = [];
  const push = frameBatcher((items) => renders.push(items), (cb) => scheduled.push(cb));
  push(1);
  push(2);
  push(3);
  assert.equal(scheduled.length, 1, 'one callback per frame');
  assert.deepEqual(renders, []);
  scheduled.shift()?.();
  assert.deepEqual(renders, [[1, 2, 3]]);
  push(4);
  push.flush();
  assert.deepEqual(renders, [[1, 2, 3], [4]]);
  scheduled.shift()?.(); // the stale callback does nothing
  assert.equal(renders.length, 2);
  push(5);
  push.cancel();
  scheduled.shift()?.();
  assert.equal(renders.length, 2);
});
