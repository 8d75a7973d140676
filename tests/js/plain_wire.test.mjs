// A client that did not ask for tokenrelay's extras gets the provider's wire: no `id:`,
// no `retry:` lines. Checked the way tutorials read SSE by hand, in both client protocols:
//
// - the tutorial parser: split the text on blank lines, keep the blocks that start with
//   `data: ` (OpenAI), or read a block as its `event: ` line then its `data: ` line
//   (Anthropic): an `id:` line in front of each block makes both render nothing;
// - a line-based parser: every line that starts with `data: `.
//
// And a client that declares it resumes (X-Tokenrelay-Resume: 1) gets the ids.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { gateway } from './helpers.mjs';

/** @type {Awaited<ReturnType<typeof gateway>>} */
let gw;

before(async () => {
  gw = await gateway({ rate: 100 });
});

after(async () => {
  await gw?.close();
});

const MESSAGE = 'the quick brown fox jumps over the lazy dog';

/**
 * The response body as the network hands it over, read by `onText` as it comes.
 * @param {string} path
 * @param {object} body
 * @param {(chunk: string) => void} onText
 * @param {Record<string, string>} [headers]
 */
async function post(path, body, onText, headers = {}) {
  const response = await fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200);
  assert.ok(response.body);
  const decoder = new TextDecoder();
  let raw = '';
  for await (const bytes of response.body) {
    const text = decoder.decode(bytes, { stream: true });
    raw += text;
    onText(text);
  }
  return raw;
}

/** The tutorial's parser, OpenAI chat: blocks split on blank lines, `data: ` blocks kept. */
function tutorialOpenAI() {
  let buffer = '';
  const out = { answer: '', done: false, events: 0 };
  const feed = (/** @type {string} */ chunk) => {
    buffer += chunk;
    const blocks = buffer.split('\n\n');
    buffer = blocks.pop() ?? '';
    for (const block of blocks) {
      if (!block.startsWith('data: ')) continue;
      out.events += 1;
      const data = block.slice(6);
      if (data === '[DONE]') out.done = true;
      else out.answer += JSON.parse(data).choices[0]?.delta?.content ?? '';
    }
  };
  return { feed, out };
}

/** A line-based parser: each `data: ` line, whatever comes before it. */
function lineBased(/** @type {(data: any, out: any) => void} */ onData) {
  let buffer = '';
  const out = { answer: '', done: false, events: 0 };
  const feed = (/** @type {string} */ chunk) => {
    buffer += chunk;
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('data: ')) continue;
      out.events += 1;
      const data = line.slice(6);
      if (data === '[DONE]') out.done = true;
      else onData(JSON.parse(data), out);
    }
  };
  return { feed, out };
}

/** The tutorial's parser, Anthropic: a block is its `event: ` line, then its `data: ` line. */
function tutorialAnthropic() {
  let buffer = '';
  const out = { answer: '', done: false, events: 0 };
  const feed = (/** @type {string} */ chunk) => {
    buffer += chunk;
    const blocks = buffer.split('\n\n');
    buffer = blocks.pop() ?? '';
    for (const block of blocks) {
      const [eventLine = '', dataLine = ''] = block.split('\n');
      if (!eventLine.startsWith('event: ') || !dataLine.startsWith('data: ')) continue;
      out.events += 1;
      anthropicData(JSON.parse(dataLine.slice(6)), out);
    }
  };
  return { feed, out };
}

/** @param {any} data @param {any} out */
function anthropicData(data, out) {
  if (data.type === 'content_block_delta' && data.delta.type === 'text_delta') out.answer += data.delta.text;
  if (data.type === 'message_stop') out.done = true;
}

/** @param {any} data @param {any} out */
function openaiData(data, out) {
  out.answer += data.choices[0]?.delta?.content ?? '';
}

const models = () => (gw.fake ? ['local/echo', 'fake/echo'] : ['local/echo']);

const PROTOCOLS = [
  {
    name: 'OpenAI chat',
    path: '/v1/chat/completions',
    body: (/** @type {string} */ model) => ({ model, stream: true, messages: [{ role: 'user', content: MESSAGE }] }),
    parsers: { tutorial: tutorialOpenAI, 'line-based': () => lineBased(openaiData) },
  },
  {
    name: 'Anthropic',
    path: '/v1/messages',
    body: (/** @type {string} */ model) => ({ model, stream: true, max_tokens: 200, messages: [{ role: 'user', content: MESSAGE }] }),
    parsers: { tutorial: tutorialAnthropic, 'line-based': () => lineBased(anthropicData) },
  },
];

for (const protocol of PROTOCOLS) {
  for (const [kind, make] of Object.entries(protocol.parsers)) {
    test(`${protocol.name}: the ${kind} parser renders the whole answer`, async () => {
      for (const model of models()) {
        const parser = make();
        const raw = await post(protocol.path, protocol.body(model), parser.feed);
        assert.equal(parser.out.answer.trim(), MESSAGE, `${model}: ${JSON.stringify(raw.slice(0, 300))}`);
        assert.ok(parser.out.done, `${model}: the end of the stream is seen`);
        assert.ok(parser.out.events > MESSAGE.split(' ').length, `${model}: every event`);
        assert.ok(!/^(id|retry):/m.test(raw), `${model}: no id or retry line`);
      }
    });
  }

  test(`${protocol.name}: a client that declares it resumes gets an id on every event`, async () => {
    const raw = await post(protocol.path, protocol.body('local/echo'), () => {}, { 'X-Tokenrelay-Resume': '1' });
    const blocks = raw.split('\n\n').filter((b) => b.trim() && !b.startsWith(':'));
    assert.ok(blocks.length > 3);
    assert.ok(blocks.every((b) => /^id: st_[^\n]+:\d+\n/.test(b)), raw.slice(0, 300));
  });
}
