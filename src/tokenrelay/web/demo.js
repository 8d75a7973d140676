// @ts-check
// The live demo: every network read of an SSE stream as it arrives (with its arrival
// time, line ends made visible) beside the text streamChat renders from the same stream.
import { APIError, frameBatcher, streamChat } from './tokenrelay.js';
import { renderMarkdown } from './markdown.js';
import { apiKey, fetchModels, initTheme } from './common.js';

/**
 * @template {Element} T
 * @param {string} id
 * @returns {T}
 */
const byId = (id) => /** @type {T} */ (/** @type {unknown} */ (document.getElementById(id)));

const model = /** @type {HTMLSelectElement} */ (byId('model'));
const form = byId('demo-form');
const prompt = /** @type {HTMLTextAreaElement} */ (byId('prompt'));
const send = /** @type {HTMLButtonElement} */ (byId('send'));
const stopButton = /** @type {HTMLButtonElement} */ (byId('stop'));
const frames = byId('frames');
const rendered = byId('rendered');
const status = byId('demo-status');
const stat = {
  ttft: byId('stat-ttft'),
  reads: byId('stat-reads'),
  frames: byId('stat-frames'),
  pings: byId('stat-pings'),
  bytes: byId('stat-bytes'),
  elapsed: byId('stat-elapsed'),
};

/** @type {AbortController | null} */
let running = null;
const encoder = new TextEncoder();

/**
 * One read as a list row: arrival time, size, and the text with CR / LF shown.
 * @param {number} ms
 * @param {string} text
 */
function readRow(ms, text) {
  const row = document.createElement('li');
  row.className = 'frame';
  if (/^(:[^\n]*\n\n?)+$/.test(text)) row.classList.add('ping');
  const time = document.createElement('span');
  time.className = 'frame-time';
  time.textContent = `+${ms.toFixed(0)} ms`;
  const size = document.createElement('span');
  size.className = 'frame-size';
  size.textContent = `${encoder.encode(text).length} B`;
  const body = document.createElement('pre');
  body.className = 'frame-body';
  for (const piece of text.split(/(\r\n|\r|\n)/)) {
    if (piece === '\r\n' || piece === '\r' || piece === '\n') {
      const mark = document.createElement('span');
      mark.className = 'eol';
      mark.textContent = piece === '\n' ? '\\n' : piece === '\r' ? '\\r' : '\\r\\n';
      body.append(mark, '\n');
    } else if (piece) {
      body.append(piece);
    }
  }
  row.append(time, size, body);
  return row;
}

async function run() {
  if (running) return;
  const controller = new AbortController();
  running = controller;
  send.disabled = true;
  stopButton.disabled = false;
  frames.replaceChildren();
  rendered.replaceChildren();
  status.textContent = '';
  status.className = 'demo-status';
  let text = '';
  let reads = 0;
  let frameCount = 0;
  let bytes = 0;
  let pings = 0;
  const started = performance.now();
  /** @type {number | null} */
  let first = null;

  /** @type {Array<{ms: number, text: string}>} */
  const arrived = [];
  const batch = frameBatcher(() => {
    frames.append(...arrived.splice(0).map((r) => readRow(r.ms, r.text)));
    frames.scrollTop = frames.scrollHeight;
    renderMarkdown(rendered, text);
    stat.reads.textContent = String(reads);
    stat.frames.textContent = String(frameCount);
    stat.pings.textContent = String(pings);
    stat.bytes.textContent = bytes.toLocaleString();
    stat.ttft.textContent = first === null ? '–' : `${Math.round(first - started)} ms`;
    stat.elapsed.textContent = `${Math.round(performance.now() - started)} ms`;
  });

  try {
    for await (const event of streamChat({
      model: model.value,
      messages: [{ role: 'user', content: prompt.value }],
      apiKey: apiKey(),
      signal: controller.signal,
      onRaw: (raw) => {
        reads += 1;
        bytes += encoder.encode(raw).length;
        pings += (raw.match(/^:/gm) ?? []).length;
        arrived.push({ ms: performance.now() - started, text: raw });
        batch(null);
      },
      onFrame: () => {
        frameCount += 1;
      },
      onReconnect: ({ lastEventId }) => {
        status.textContent = `Reconnected after a drop, resuming after ${lastEventId ?? 'the start'}.`;
      },
    })) {
      if (first === null && (event.type === 'text' || event.type === 'reasoning' || event.type === 'tool_call')) {
        first = performance.now();
      }
      if (event.type === 'text') text += event.text;
      else if (event.type === 'tool_call') text += event.arguments ?? '';
      else if (event.type === 'finish') status.textContent = `finish_reason: ${event.reason}`;
      else if (event.type === 'error') {
        status.textContent = `Error: ${event.error.message}`;
        status.classList.add('bad');
      }
      batch(null);
    }
    if (controller.signal.aborted) status.textContent = 'Stopped: the gateway was asked to cancel.';
  } catch (err) {
    status.textContent = err instanceof APIError ? `Error ${err.status}: ${err.message}` : `Error: ${err}`;
    status.classList.add('bad');
  }
  batch.flush();
  batch(null);
  batch.flush();
  running = null;
  send.disabled = false;
  stopButton.disabled = true;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  run();
});
stopButton.addEventListener('click', () => running?.abort());

initTheme();
fetchModels()
  .then((ids) => {
    model.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (ids.includes('local/echo')) model.value = 'local/echo';
  })
  .catch((err) => {
    model.replaceChildren(new Option('Models unavailable', ''));
    status.textContent = err instanceof APIError ? `Could not list models: ${err.message}` : String(err);
  });
