// streamChat against a real gateway process: local/echo, recorded streams replayed by the
// fake upstream, errors, cancel, and real dropped connections (a TCP proxy in front of
// the gateway cuts the response mid-frame) resumed with Last-Event-ID.
//
// The gateway comes from $TOKENRELAY_TEST_GATEWAY (tests/test_web.py starts one), or the
// test starts its own fake upstream and gateway (python -m tokenrelay.cli ...).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { after, before, test } from 'node:test';

import { APIError, SSEParser, streamChat } from '../../src/tokenrelay/web/tokenrelay.js';
import { collect, fixtureFiles, gateway, skipOrFail } from './helpers.mjs';

/** @type {Awaited<ReturnType<typeof gateway>>} */
let gw;
/** Whether the gateway numbers its frames and serves GET /v1/streams/{id}. */
let resumable = false;

before(async () => {
  gw = await gateway({ rate: 100 });
  const r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify({ model: 'local/echo', stream: true, messages: [{ role: 'user', content: 'probe' }] }),
  });
  await r.text();
  resumable = r.headers.get('x-stream-id') !== null;
});

after(async () => {
  await gw?.close();
});

/** @param {number} n */
const words = (n) => Array.from({ length: n }, (_, i) => `w${i + 1}`).join(' ');

/** @param {string} content */
const user = (content) => [{ role: 'user', content }];

/** @param {import('node:test').TestContext} t */
function needResume(t) {
  if (!resumable) skipOrFail(t, 'the gateway does not number frames (no X-Stream-Id): resume is not available');
  return resumable;
}

test('local/echo streams the message back word by word, multi-byte text intact', async () => {
  const message = '你好, world! 流式传输 🌍 ünïcödé — done.';
  const { events, text } = await collect(streamChat({ baseUrl: `${gw.url}/v1`, model: 'local/echo', messages: user(message) }));
  assert.equal(text, message);
  assert.ok(events.filter((e) => e.type === 'text').length >= 5, 'several deltas, not one');
  assert.deepEqual(events.filter((e) => e.type === 'finish'), [{ type: 'finish', reason: 'stop', choice: 0 }]);
  const usage = events.find((e) => e.type === 'usage');
  assert.ok(usage && usage.usage.completion_tokens > 0, 'usage arrives (include_usage is asked for)');
});

test('recorded streams replayed through the gateway give the text the recording holds', async (t) => {
  const chats = fixtureFiles().filter((f) => /^(openai|azure|deepseek|openrouter)\/chat_/.test(f.name));
  if (!gw.fake || !chats.length) return skipOrFail(t, 'no recorded streams (../shared/fixtures/streams is absent)');
  for (const { name, path } of chats) {
    // What the recording says, straight from its frames.
    let expected = '';
    let reasoning = '';
    for (const ev of new SSEParser().feed(readFileSync(path, 'utf8'))) {
      if (ev.data === '[DONE]') continue;
      const chunk = JSON.parse(ev.data);
      for (const choice of chunk.choices ?? []) {
        expected += choice.delta?.content ?? '';
        reasoning += choice.delta?.reasoning_content ?? choice.delta?.reasoning ?? '';
      }
    }
    const model = `fake/replay/${name.replace(/\.sse$/, '')}`;
    const { events, text } = await collect(streamChat({ baseUrl: `${gw.url}/v1`, model, messages: user('hi') }));
    assert.equal(text, expected, name);
    const gotReasoning = events.filter((e) => e.type === 'reasoning').map((e) => e.text).join('');
    assert.equal(gotReasoning, reasoning, `${name} reasoning`);
  }
});

test('an unknown model is an APIError (404, model_not_found) before the stream', async () => {
  await assert.rejects(collect(streamChat({ baseUrl: `${gw.url}/v1`, model: 'local/nope', messages: user('x') })), (err) => {
    assert.ok(err instanceof APIError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    return true;
  });
});

/**
 * A TCP proxy in front of the gateway that cuts the first `cuts` chat responses in the
 * middle of their `cutAt`-th frame (both sockets destroyed: a real network drop).
 * @param {string} target  the gateway's URL
 * @param {{cuts?: number, cutAt?: number}} [options]
 */
async function cuttingProxy(target, { cuts = 1, cutAt = 6 } = {}) {
  const { hostname, port } = new URL(target);
  let remaining = cuts;
  /** @type {Set<import('node:net').Socket>} */
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    let cutThis = false;
    let seen = '';
    client.on('data', (data) => {
      const head = data.toString('latin1');
      if (!cutThis && remaining > 0 && (head.startsWith('POST /v1/chat/completions') || head.startsWith('GET /v1/streams/'))) {
        cutThis = true;
        remaining -= 1;
      }
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      if (!cutThis) return void client.write(data);
      const before = seen.length;
      seen += data.toString('latin1');
      let at = -1;
      let from = 0;
      for (let n = 0; n < cutAt; n += 1) {
        at = seen.indexOf('\nid: ', from);
        if (at === -1) break;
        from = at + 1;
      }
      if (at === -1) return void client.write(data);
      const keep = at + 12 - before; // into the frame: its id line is cut in half
      if (keep > 0) client.write(data.subarray(0, keep));
      client.destroy();
      upstream.destroy();
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(undefined)));
  const address = server.address();
  const proxyPort = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${proxyPort}`,
    close: () =>
      new Promise((ok) => {
        server.close(() => ok(undefined));
        for (const socket of sockets) socket.destroy(); // idle keep-alive connections too
      }),
    remaining: () => remaining,
  };
}

// RESUME: these need the gateway's stream hub (X-Stream-Id, id: <stream>:<seq> on every
// frame, GET /v1/streams/{id}). They skip (fail under CI=true) on a gateway without it.
test('RESUME: a connection cut mid-frame resumes with Last-Event-ID: no gap, no repeat', async (t) => {
  if (!needResume(t)) return;
  const proxy = await cuttingProxy(gw.url, { cuts: 1, cutAt: 6 });
  try {
    const message = words(60);
    /** @type {any[]} */
    const reconnects = [];
    const raw = [];
    const { text } = await collect(
      streamChat({
        baseUrl: `${proxy.url}/v1`,
        model: 'local/echo',
        messages: user(message),
        onReconnect: (info) => reconnects.push(info),
        onRaw: (r) => raw.push(r),
        retryDelay: 50,
      }),
    );
    assert.equal(proxy.remaining(), 0, 'the proxy did cut the stream');
    assert.equal(text, message);
    assert.equal(reconnects.length, 1);
    assert.match(reconnects[0].lastEventId, /:5$/, 'resumed after the last whole frame (5)');
  } finally {
    await proxy.close();
  }
});

test('RESUME: three drops in a row (the resumed connections cut too) still give the whole text', async (t) => {
  if (!needResume(t)) return;
  const proxy = await cuttingProxy(gw.url, { cuts: 3, cutAt: 3 });
  try {
    const message = words(50);
    let reconnects = 0;
    const { text } = await collect(
      streamChat({ baseUrl: `${proxy.url}/v1`, model: 'local/echo', messages: user(message), onReconnect: () => (reconnects += 1), retryDelay: 20 }),
    );
    assert.equal(proxy.remaining(), 0);
    assert.equal(text, message);
    assert.equal(reconnects, 3);
  } finally {
    await proxy.close();
  }
});

test('RESUME: abort stops the stream and the cancel route stops generation', async (t) => {
  if (!needResume(t)) return;
  const controller = new AbortController();
  /** @type {Array<{url: string, status: number, body: any}>} */
  const cancels = [];
  /** @type {typeof fetch} */
  const recording = async (input, init) => {
    const response = await fetch(input, init);
    if (String(input).endsWith('/cancel')) cancels.push({ url: String(input), status: response.status, body: await response.clone().json() });
    return response;
  };
  let streamId = null;
  let received = '';
  for await (const event of streamChat({
    baseUrl: `${gw.url}/v1`,
    model: 'local/echo',
    messages: user(words(400)),
    signal: controller.signal,
    fetch: recording,
    onOpen: (info) => (streamId = info.streamId),
  })) {
    if (event.type === 'text') received += event.text;
    if (received.split(' ').length > 5) controller.abort();
  }
  for (let i = 0; i < 50 && !cancels.length; i += 1) await new Promise((ok) => setTimeout(ok, 20));
  assert.ok(streamId);
  assert.equal(cancels.length, 1);
  assert.equal(cancels[0].url, `${gw.url}/v1/streams/${streamId}/cancel`);
  assert.equal(cancels[0].status, 200);
  assert.equal(cancels[0].body.status, 'cancelled', 'stopped before it finished');
  // Re-attaching shows the stream ended long before its 400 words.
  const r = await fetch(`${gw.url}/v1/streams/${streamId}?after=0`);
  const replay = await r.text();
  assert.ok(!replay.includes('w399'), 'generation stopped');
});
