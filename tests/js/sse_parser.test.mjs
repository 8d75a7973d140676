// SSEParser (tokenrelay.js): line ends, fields, comments, BOM, and every recorded stream
// split at every byte offset, through TextDecoder in stream mode like streamChat does.
// It must give exactly what the gateway's Python decoder (tokenrelay.sse) gives.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { SSEParser } from '../../src/tokenrelay/web/tokenrelay.js';
import { fixtureFiles, runPython, skipOrFail } from './helpers.mjs';

/**
 * Parse text pieces; returns the events plus the parser's end state.
 * @param {string[]} pieces
 */
function parse(pieces) {
  const parser = new SSEParser();
  const events = pieces.flatMap((piece) => parser.feed(piece));
  return { events, lastEventId: parser.lastEventId, comments: parser.comments };
}

/**
 * Parse byte pieces the way streamChat does (TextDecoder, stream mode, BOM kept for the
 * parser), then end.
 * @param {Uint8Array[]} chunks
 */
function parseBytes(chunks) {
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  const pieces = chunks.map((c) => decoder.decode(c, { stream: true }));
  pieces.push(decoder.decode());
  return parse(pieces);
}

/** @param {string} data @param {Partial<import('../../src/tokenrelay/web/tokenrelay.js').SSEEvent>} [rest] */
const ev = (data, rest = {}) => ({ data, event: null, id: null, retry: null, ...rest });

test('LF, CR and CRLF line ends all work, and mixed', () => {
  for (const nl of ['\n', '\r', '\r\n']) {
    assert.deepEqual(parse([`data: a${nl}${nl}data: b${nl}${nl}`]).events, [ev('a'), ev('b')], JSON.stringify(nl));
  }
  assert.deepEqual(parse(['data: a\r\n\rdata: b\n\r\n']).events, [ev('a'), ev('b')]);
});

test('a CR at the end of one piece and an LF at the start of the next are one line end', () => {
  // Were they two line ends, the LF would end the event after "a" with an empty line
  // and "b" would be a separate event.
  assert.deepEqual(parse(['data: a\r', '\ndata: b\r', '\n\r', '\n']).events, [ev('a\nb')]);
  // ...also when an empty piece comes between them
  assert.deepEqual(parse(['data: a\r', '', '\ndata: b\r\n\r\n']).events, [ev('a\nb')]);
  // A CR alone ends the line; the next piece's first character is content.
  assert.deepEqual(parse(['data: a\r', 'data: b\r\r']).events, [ev('a\nb')]);
});

test('lines split anywhere are joined, including long lines in many pieces', () => {
  assert.deepEqual(parse(['da', 'ta', ': he', 'llo\n', '\n']).events, [ev('hello')]);
  const long = 'x'.repeat(100_000);
  const pieces = ['data: '];
  for (let i = 0; i < long.length; i += 7) pieces.push(long.slice(i, i + 7));
  pieces.push('\n\n');
  assert.deepEqual(parse(pieces).events, [ev(long)]);
});

test('multi-line data is joined with LF; one space after the colon is dropped, no more', () => {
  assert.deepEqual(parse(['data: one\ndata:two\ndata:  three\ndata\ndata:\n\n']).events, [ev('one\ntwo\n three\n\n')]);
});

test('comments are ignored and counted; a ping never dispatches an event', () => {
  const r = parse([': ping\n\n:\n: OPENROUTER PROCESSING\n\ndata: x\n:mid\n\n']);
  assert.deepEqual(r.events, [ev('x')]);
  assert.equal(r.comments, 4);
});

test('id, event and retry fields', () => {
  const r = parse(['id: s:1\nevent: delta\nretry: 1500\ndata: a\n\n', 'data: b\n\n', 'id\ndata: c\n\n', 'id: x\0y\ndata: d\n\n']);
  assert.deepEqual(r.events, [
    ev('a', { id: 's:1', event: 'delta', retry: 1500 }),
    ev('b', { id: 's:1' }), // the id stays in force; event and retry do not
    ev('c', { id: '' }), // an empty id resets it
    ev('d', { id: '' }), // an id containing NUL is ignored
  ]);
  assert.equal(r.lastEventId, '');
  // retry sets the reconnection time as soon as it is parsed, with or without data
  const parser = new SSEParser();
  assert.equal(parser.reconnectionTime, null);
  parser.feed('retry: 1000\n\n');
  assert.equal(parser.reconnectionTime, 1000);
  parser.feed('retry: soon\ndata: x\n\n');
  assert.equal(parser.reconnectionTime, 1000);
  assert.deepEqual(parse(['event:\ndata: a\n\n', 'retry: 1x\ndata: b\n\n', 'retry: -5\ndata: c\n\n']).events, [ev('a'), ev('b'), ev('c')]);
  assert.deepEqual(parse(['unknown: q\ndata: a\n\n']).events, [ev('a')]);
});

test('lastEventId advances when a block ends, not when an event is cut off', () => {
  const parser = new SSEParser();
  parser.feed('id: s:1\ndata: a\n\nid: s:2\n');
  assert.equal(parser.lastEventId, 's:1');
  parser.feed('\n'); // a block with only an id still sets it
  assert.equal(parser.lastEventId, 's:2');
  parser.feed('id: s:3\ndata: partial');
  parser.end(); // the connection dropped
  assert.equal(parser.lastEventId, 's:2');
  // The next connection's stream starts clean (and may start with a BOM).
  assert.deepEqual(parser.feed('\uFEFFdata: next\n\n'), [ev('next', { id: 's:2' })]);
});

test('an event without its blank line is not dispatched', () => {
  assert.deepEqual(parse(['data: a\n\ndata: b\n']).events, [ev('a')]);
  assert.deepEqual(parse(['data: a\n\ndata: b']).events, [ev('a')]);
});

test('one leading BOM is dropped, a second one is content', () => {
  assert.deepEqual(parse(['\uFEFFdata: a\n\n']).events, [ev('a')]);
  assert.deepEqual(parse(['', '\uFEFF', 'data: a\n\n']).events, [ev('a')]);
  // "\uFEFFdata" is not the field name "data"
  assert.deepEqual(parse(['\uFEFF\uFEFFdata: a\n\n']).events, []);
  assert.deepEqual(parse(['data: \uFEFFa\n\n']).events, [ev('\uFEFFa')]);
  const bom = new Uint8Array([0xef, 0xbb, 0xbf]);
  const rest = new TextEncoder().encode('data: a\n\n');
  assert.deepEqual(parseBytes([bom.subarray(0, 1), bom.subarray(1), rest]).events, [ev('a')]);
});

test('multi-byte UTF-8 split across reads decodes whole in TextDecoder stream mode', () => {
  const text = 'data: 你好, world 🌍 — ünïcödé\n\n';
  const bytes = new TextEncoder().encode(text);
  for (let k = 0; k <= bytes.length; k += 1) {
    assert.deepEqual(parseBytes([bytes.subarray(0, k), bytes.subarray(k)]).events, [ev(text.slice(6, -2))], `split at ${k}`);
  }
  const single = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  assert.deepEqual(parseBytes(single).events, [ev(text.slice(6, -2))]);
  // Without stream mode each piece would be decoded alone: the tutorials' bug.
  const naive = new TextDecoder().decode(bytes.subarray(0, 8)) + new TextDecoder().decode(bytes.subarray(8));
  assert.ok(naive.includes('\uFFFD'));
});

const fixtures = fixtureFiles();

test('every recorded stream: split at every byte offset, and one byte at a time, equals the unsplit parse', async (t) => {
  if (!fixtures.length) return skipOrFail(t, 'recorded streams not found (../shared/fixtures/streams is absent)');
  for (const { name, path } of fixtures) {
    await t.test(name, () => {
      const bytes = new Uint8Array(readFileSync(path));
      const whole = parseBytes([bytes]);
      assert.ok(whole.events.length > 0, 'the fixture has events');
      // At a byte offset between two characters, stream-mode decoding of the two pieces
      // yields exactly the decoded text cut at that character: slice it (cheap). Inside
      // a multi-byte character, decode the two byte pieces for real.
      const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);
      let unit = 0; // UTF-16 units of the characters wholly before byte k
      for (let k = 0; k <= bytes.length; k += 1) {
        const boundary = k === bytes.length || (bytes[k] & 0xc0) !== 0x80;
        let split;
        if (boundary) {
          split = parse([text.slice(0, unit), text.slice(unit)]);
          if (k % 97 === 0) assert.deepEqual(decodePieces(bytes, k), [text.slice(0, unit), text.slice(unit)], `the slicing model at ${k}`);
          if (k < bytes.length) unit += bytes[k] >= 0xf0 ? 2 : 1; // a 4-byte character is two units
        } else {
          split = parseBytes([bytes.subarray(0, k), bytes.subarray(k)]);
        }
        // a cheap full comparison first; the deep one only to report a difference
        if (!sameParse(split, whole)) assert.deepEqual(split, whole, `split at byte ${k}`);
      }
      const single = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
      assert.deepEqual(parseBytes(single), whole, 'one byte at a time');
    });
  }
});

/**
 * What streamChat's decoder yields for the two byte pieces cut at k.
 * @param {Uint8Array} bytes
 * @param {number} k
 */
function decodePieces(bytes, k) {
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  return [decoder.decode(bytes.subarray(0, k), { stream: true }), decoder.decode(bytes.subarray(k), { stream: true }) + decoder.decode()];
}

/**
 * @param {ReturnType<typeof parse>} a
 * @param {ReturnType<typeof parse>} b
 */
function sameParse(a, b) {
  if (a.events.length !== b.events.length || a.lastEventId !== b.lastEventId || a.comments !== b.comments) return false;
  for (let i = 0; i < a.events.length; i += 1) {
    const x = a.events[i];
    const y = b.events[i];
    if (x.data !== y.data || x.event !== y.event || x.id !== y.id || x.retry !== y.retry) return false;
  }
  return true;
}

// The gateway's decoder, for comparison: each input (base64 bytes) -> events and end state.
const PY_DECODE = `
import base64, json, sys
from tokenrelay.sse import SSEDecoder
out = []
for b64 in json.load(sys.stdin):
    d = SSEDecoder()
    events = [dict(data=e.data, event=e.event, id=e.id, retry=e.retry) for e in d.iter([base64.b64decode(b64)])]
    out.append(dict(events=events, lastEventId=d.last_event_id, comments=d.comments))
print(json.dumps(out))
`;

test('the same events as the gateway\'s Python decoder: every recorded stream', (t) => {
  if (!fixtures.length) return skipOrFail(t, 'recorded streams not found (../shared/fixtures/streams is absent)');
  const inputs = fixtures.map(({ path }) => readFileSync(path));
  const expected = runPython(PY_DECODE, inputs.map((b) => b.toString('base64')));
  inputs.forEach((bytes, i) => assert.deepEqual(parseBytes([new Uint8Array(bytes)]), expected[i], fixtures[i].name));
});

test('the same events as the gateway\'s Python decoder: random streams of tricky pieces', () => {
  const pieces = [
    'data', 'data:', 'data: ', 'id', 'id: s:', 'event', 'event:', 'retry: ', 'retry:', ': ping', ':', ' ', 'x', '7',
    '\n', '\n', '\r', '\r\n', '\r\n', '\uFEFF', '\0', 'é', '你', '🌍', ':::',
  ];
  const extraBytes = [[0xff], [0xe4, 0xbd], [0xc3], [0xef, 0xbb, 0xbf]];
  let seed = 12345;
  const rand = (/** @type {number} */ n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const enc = new TextEncoder();
  /** @type {Uint8Array[]} */
  const streams = [];
  for (let s = 0; s < 400; s += 1) {
    const parts = [];
    const n = 1 + rand(40);
    for (let i = 0; i < n; i += 1) {
      if (rand(12) === 0) parts.push(...extraBytes[rand(extraBytes.length)]);
      else parts.push(...enc.encode(pieces[rand(pieces.length)]));
    }
    streams.push(new Uint8Array(parts));
  }
  const expected = runPython(PY_DECODE, streams.map((b) => Buffer.from(b).toString('base64')));
  streams.forEach((bytes, i) => {
    const label = JSON.stringify(Buffer.from(bytes).toString('latin1'));
    assert.deepEqual(parseBytes([bytes]), expected[i], `unsplit ${label}`);
    for (let k = 0; k <= bytes.length; k += 1) {
      assert.deepEqual(parseBytes([bytes.subarray(0, k), bytes.subarray(k)]), expected[i], `split at ${k}: ${label}`);
    }
    const single = Array.from(bytes, (_, j) => bytes.subarray(j, j + 1));
    assert.deepEqual(parseBytes(single), expected[i], `byte by byte: ${label}`);
  });
});
