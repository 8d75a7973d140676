// @ts-check
// tokenrelay.js: the browser SDK of the tokenrelay gateway. An ES module, no build step.
//
//   import { streamChat } from '/static/tokenrelay.js';
//   for await (const ev of streamChat({ model: 'local/echo', messages })) {
//     if (ev.type === 'text') out.textContent += ev.text;
//   }
//
// streamChat reads the OpenAI wire (`data: {chunk}` frames, `data: [DONE]`) with fetch,
// a ReadableStream reader and a TextDecoder in stream mode (a character split across two
// reads stays whole), through an incremental SSE parser that follows the WHATWG rules.
// When the connection drops after the stream started, it re-attaches to the same stream
// with GET /v1/streams/{id} and Last-Event-ID, and skips any frame it has already seen:
// the caller sees one uninterrupted stream. Aborting the signal stops reading and asks
// the gateway to stop generating (POST /v1/streams/{id}/cancel).

/**
 * One dispatched server-sent event.
 * @typedef {object} SSEEvent
 * @property {string} data  the data lines joined with "\n"
 * @property {string | null} event  the event type; null for the default type ("message")
 * @property {string | null} id  the last event id in force when the event was dispatched
 * @property {number | null} retry  a valid `retry:` value given in the same block, else null
 */

const BOM = '\uFEFF';
const LINE_END = /\r\n|\r|\n/g;
const DIGITS = /^[0-9]+$/;

/**
 * Incremental event-stream parser (WHATWG "server-sent events", the same rules as the
 * gateway's Python decoder `tokenrelay.sse.SSEDecoder`): `feed(text)` with text split
 * anywhere returns the events completed so far. Lines end with CR, LF or CRLF; a CR at the
 * end of one piece and an LF at the start of the next are one line end. One leading BOM
 * is dropped. Several `data:` lines are joined with "\n". Comment lines (starting with
 * ":") are ignored and counted in `comments`. `id`, `event` and `retry` fields are kept.
 *
 * Feed it text, not bytes: decode with `new TextDecoder('utf-8', {ignoreBOM: true})` and
 * `decode(bytes, {stream: true})` so that a multi-byte character split across reads is
 * decoded whole (and the BOM rule is applied here, once).
 */
export class SSEParser {
  constructor() {
    /** Pieces of the unfinished last line (no CR/LF inside). @type {string[]} */
    this._pending = [];
    /** At stream start: a BOM is still possible. */
    this._start = true;
    /** The previous piece ended with CR: an LF at the start of the next one belongs to it. */
    this._skipLF = false;
    /** @type {string[]} */
    this._data = [];
    /** @type {string | null} */
    this._event = null;
    /** @type {number | null} */
    this._retry = null;
    /** The spec's "last event ID buffer". @type {string | null} */
    this._id = null;
    /**
     * The spec's "last event ID string": the latest id when a blank line ended a block
     * (so a stream cut inside an event does not advance it). Send it as Last-Event-ID.
     * @type {string | null}
     */
    this.lastEventId = null;
    /** Comment lines seen (keep-alive pings). */
    this.comments = 0;
    /**
     * The spec's reconnection time: the latest valid `retry:` value, in ms, also from a
     * block without data (a server may send `retry: 1000` alone). Null until one came.
     * @type {number | null}
     */
    this.reconnectionTime = null;
  }

  /**
   * Parse the next piece of the stream.
   * @param {string} text
   * @returns {SSEEvent[]} the events this piece completed (often none)
   */
  feed(text) {
    if (this._start) {
      if (!text) return [];
      this._start = false;
      if (text[0] === BOM) text = text.slice(1);
    }
    if (this._skipLF && text) {
      this._skipLF = false;
      if (text[0] === '\n') text = text.slice(1);
    }
    /** @type {SSEEvent[]} */
    const out = [];
    let pos = 0;
    LINE_END.lastIndex = 0;
    for (let m = LINE_END.exec(text); m !== null; m = LINE_END.exec(text)) {
      let line = text.slice(pos, m.index);
      if (this._pending.length) {
        this._pending.push(line);
        line = this._pending.join('');
        this._pending = [];
      }
      this._line(line, out);
      pos = LINE_END.lastIndex;
      if (m[0] === '\r' && pos === text.length) this._skipLF = true;
    }
    if (pos < text.length) this._pending.push(text.slice(pos));
    return out;
  }

  /**
   * End of one connection's stream. Pending data is discarded, as the spec says (an event
   * without its closing blank line is not dispatched). `lastEventId` is kept; the parser is
   * then ready for the next connection's stream, whose leading BOM, if any, is dropped.
   * @returns {SSEEvent[]} always empty (kept for symmetry with feed)
   */
  end() {
    this._pending = [];
    this._start = true;
    this._skipLF = false;
    this._data = [];
    this._event = null;
    this._retry = null;
    this._id = this.lastEventId;
    return [];
  }

  /**
   * @param {string} line  one complete line, without its line end
   * @param {SSEEvent[]} out
   */
  _line(line, out) {
    if (line === '') {
      this.lastEventId = this._id;
      if (this._data.length) {
        out.push({ data: this._data.join('\n'), event: this._event, id: this._id, retry: this._retry });
        this._data = [];
      }
      this._event = null;
      this._retry = null;
      return;
    }
    if (line.startsWith('data: ')) {
      this._data.push(line.slice(6));
      return;
    }
    if (line[0] === ':') {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (name === 'data') {
      this._data.push(value);
    } else if (name === 'event') {
      this._event = value || null; // an empty type means the default type
    } else if (name === 'id') {
      if (!value.includes('\0')) this._id = value;
    } else if (name === 'retry' && DIGITS.test(value)) {
      const ms = Number(value);
      if (Number.isSafeInteger(ms)) this._retry = this.reconnectionTime = ms;
    }
  }
}

/**
 * An error answered before the stream started: an HTTP status with the OpenAI error
 * body `{"error": {message, type, param, code}}`.
 */
export class APIError extends Error {
  /**
   * @param {number} status
   * @param {{message?: string, type?: string, param?: string | null, code?: string | null}} body
   * @param {string | null} [requestId]
   */
  constructor(status, body, requestId = null) {
    super(body.message || `HTTP ${status}`);
    this.name = 'APIError';
    this.status = status;
    this.type = body.type ?? null;
    this.param = body.param ?? null;
    this.code = body.code ?? null;
    this.requestId = requestId;
  }
}

/**
 * The typed events streamChat yields. Errors during the stream (an in-band error frame,
 * or a lost connection that could not be resumed) are `error` events and end the stream;
 * errors before it (an HTTP error status, a refused connection) are thrown as APIError or
 * the fetch error.
 * @typedef {{type: 'text', text: string, choice: number}
 *   | {type: 'reasoning', text: string, choice: number}
 *   | {type: 'tool_call', index: number, id?: string, name?: string, arguments?: string, choice: number}
 *   | {type: 'finish', reason: string, choice: number}
 *   | {type: 'usage', usage: {prompt_tokens?: number, completion_tokens?: number, total_tokens?: number}}
 *   | {type: 'error', error: {message: string, type?: string, code?: string | null, param?: string | null, status?: number}}
 * } ChatEvent
 */

/**
 * @typedef {object} ReconnectInfo
 * @property {number} attempt  1 for the first re-attach attempt after a drop
 * @property {string} streamId
 * @property {string | null} lastEventId  the id of the last frame received before the drop
 */

/**
 * @typedef {object} OpenInfo
 * @property {string | null} streamId  X-Stream-Id (null when the server does not resume)
 * @property {string | null} requestId  X-Request-Id
 * @property {Response} response
 */

/**
 * Where streamChat learns that the device lost its network: `offline` and `online`
 * events and an `onLine` flag. In a browser, `window` and `navigator`; tests inject one.
 * @typedef {{onLine: boolean, addEventListener: (type: string, listener: () => void) => void, removeEventListener: (type: string, listener: () => void) => void}} Network
 */

/**
 * @typedef {object} StreamChatOptions
 * @property {string} [baseUrl]  the gateway's OpenAI base URL (default '/v1')
 * @property {string} [apiKey]  sent as `Authorization: Bearer <key>` when given
 * @property {string} model
 * @property {Array<{role: string, content: unknown}>} messages
 * @property {AbortSignal} [signal]  abort: stop reading and cancel generation upstream
 * @property {(info: ReconnectInfo) => void} [onReconnect]  called after a successful re-attach
 * @property {(info: OpenInfo) => void} [onOpen]  called when the stream's response arrives
 * @property {(text: string) => void} [onRaw]  every decoded read, as it arrives (debugging)
 * @property {(event: SSEEvent) => void} [onFrame]  every SSE event, before interpretation
 * @property {typeof fetch} [fetch]  the fetch to use (tests inject one)
 * @property {number} [maxRetries]  re-attach attempts per drop (default 6)
 * @property {number} [retryDelay]  first backoff delay in ms, doubled each attempt (default:
 *   the server's `retry:` value, else 250)
 * @property {Record<string, string>} [headers]  extra request headers
 * @property {Network | null} [network]  offline/online events (default: the browser's; null: none)
 */

/**
 * Stream a chat completion from the gateway as typed events. Other options (temperature,
 * max_tokens, tools, stream_options...) are sent in the request body as they are;
 * `stream_options.include_usage` defaults to true so that a `usage` event arrives.
 *
 * The generator ends after the last event. When `signal` aborts, or the caller leaves
 * the loop early, reading stops, the gateway's cancel route is called and the generator
 * just ends (check `signal.aborted` to tell a stop from a finish).
 *
 * A connection lost after the response started (a network error, a body that ends
 * without `[DONE]`, or the browser going offline: a dead TCP connection can take minutes
 * to fail by itself) is re-attached with GET /v1/streams/{id} and Last-Event-ID, after a
 * backoff, up to `maxRetries` attempts per drop; while the browser is offline it waits for
 * the `online` event without spending attempts. Frames whose sequence number was already
 * seen are skipped, so the caller sees each event exactly once.
 *
 * @param {StreamChatOptions & Record<string, unknown>} options
 * @returns {AsyncGenerator<ChatEvent, void, undefined>}
 */
export async function* streamChat(options) {
  const {
    baseUrl = '/v1',
    apiKey,
    model,
    messages,
    signal,
    onReconnect,
    onOpen,
    onRaw,
    onFrame,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    maxRetries = 6,
    retryDelay,
    headers: extraHeaders = {},
    network = browserNetwork(),
    ...params
  } = options;
  const base = baseUrl.replace(/\/+$/, '');
  /** @type {Record<string, string>} */
  const headers = { Accept: 'text/event-stream', ...extraHeaders };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (signal?.aborted) return;

  // `reading` ends the whole stream (the caller's abort, or leaving the loop early);
  // `connection` ends one HTTP response (aborting it is a drop, followed by a resume).
  const reading = new AbortController();
  /** @type {AbortController} */
  let connection = new AbortController();
  /** @type {string | null} */
  let streamId = null;
  let cancelSent = false;
  let finished = false; // [DONE] or an error frame: nothing left to cancel
  const cancel = () => {
    if (cancelSent || finished || streamId === null) return;
    cancelSent = true;
    fetchImpl(`${base}/streams/${encodeURIComponent(streamId)}/cancel`, {
      method: 'POST',
      headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
      keepalive: true,
    }).catch(() => {}); // best effort: the stream is gone for this reader anyway
  };
  const onAbort = () => {
    reading.abort(signal?.reason);
    connection.abort();
    cancel();
  };
  const onOffline = () => connection.abort(new Error('the browser went offline'));
  signal?.addEventListener('abort', onAbort, { once: true });
  network?.addEventListener('offline', onOffline);
  /**
   * @param {string} url
   * @param {RequestInit} init
   */
  const open = (url, init) => {
    connection = new AbortController();
    return fetchImpl(url, { ...init, headers: { ...headers, ...init.headers }, signal: connection.signal });
  };

  const parser = new SSEParser();
  let lastSeq = 0; // the highest frame sequence number seen
  /** @type {string | null} */
  let lastId = null;

  /**
   * Read one response to its end. Yields its events; returns whether any new frame came,
   * and the error that ended it early, if any.
   * @param {Response} response
   * @returns {AsyncGenerator<ChatEvent, {progressed: boolean, error: unknown}, undefined>}
   */
  async function* read(response) {
    /** @type {ChatEvent[]} */
    const pending = [];
    let progressed = false;
    /** @type {unknown} */
    let error = null;
    if (response.body === null) return { progressed, error: new TypeError('the response has no body') };
    const reader = response.body.getReader();
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          error = err;
          break;
        }
        if (chunk.done || connection.signal.aborted) break;
        const text = decoder.decode(chunk.value, { stream: true });
        if (!text) continue;
        onRaw?.(text);
        for (const sse of parser.feed(text)) {
          onFrame?.(sse);
          if (sse.id !== null) {
            const colon = sse.id.lastIndexOf(':');
            const seq = colon === -1 ? NaN : Number(sse.id.slice(colon + 1));
            if (Number.isInteger(seq)) {
              if (seq <= lastSeq) continue; // already delivered before a reconnection
              lastSeq = seq;
              if (streamId === null) streamId = sse.id.slice(0, colon);
            }
            lastId = sse.id;
          }
          progressed = true;
          if (sse.data === '[DONE]' || interpret(sse, pending)) {
            finished = true; // the end, or an error frame (which ends the stream)
            break;
          }
        }
        while (pending.length) {
          if (reading.signal.aborted) return { progressed, error }; // stopped: nothing more
          yield /** @type {ChatEvent} */ (pending.shift());
        }
        if (finished) break;
      }
    } finally {
      reader.cancel().catch(() => {});
      parser.end();
    }
    return { progressed, error };
  }

  /**
   * Re-attach after a drop: a Response, or an error event when it cannot be done.
   * @param {unknown} cause
   * @param {number} attempt  attempts already made since the last progress
   * @returns {Promise<{response: Response, attempt: number} | {failure: ChatEvent} | null>}  null: stopped
   */
  async function reattach(cause, attempt) {
    const id = /** @type {string} */ (streamId);
    for (;;) {
      if (network && !network.onLine) {
        await waitFor(network, 'online', reading.signal); // offline: no attempt spent
        if (reading.signal.aborted) return null;
      }
      attempt += 1;
      if (attempt > maxRetries) {
        return { failure: connectionError(`The connection was lost and ${maxRetries} attempts to resume failed.`, cause) };
      }
      await sleep(backoff(retryDelay ?? parser.reconnectionTime ?? 250, attempt), reading.signal);
      if (reading.signal.aborted) return null;
      try {
        const url = `${base}/streams/${encodeURIComponent(id)}`;
        const r = await open(lastId === null ? `${url}?after=0` : url, {
          method: 'GET',
          headers: lastId === null ? {} : { 'Last-Event-ID': lastId },
        });
        if (r.ok) return { response: r, attempt };
        if (r.status === 404 || r.status === 410 || r.status === 401 || r.status === 403) {
          const err = await apiError(r);
          const message = `Could not resume the stream: ${err.message}`;
          return { failure: { type: 'error', error: { message, type: 'connection_error', code: 'resume_failed', status: r.status } } };
        }
        await r.body?.cancel();
        cause = new Error(`HTTP ${r.status}`);
      } catch (err) {
        if (reading.signal.aborted) return null;
        cause = err;
      }
    }
  }

  try {
    let response;
    try {
      response = await open(`${base}/chat/completions`, {
        method: 'POST',
        // This SDK resumes a dropped stream: the gateway numbers its frames (id:) and
        // keeps the stream going for the grace when the connection drops.
        headers: { 'Content-Type': 'application/json', 'X-Tokenrelay-Resume': '1' },
        body: JSON.stringify({ model, messages, stream_options: { include_usage: true }, ...params, stream: true }),
      });
    } catch (err) {
      if (reading.signal.aborted) return;
      throw err;
    }
    if (!response.ok) throw await apiError(response);
    streamId = response.headers.get('X-Stream-Id');
    onOpen?.({ streamId, requestId: response.headers.get('X-Request-Id'), response });
    if (reading.signal.aborted) return;

    let attempt = 0; // re-attach attempts since the last frame that made progress
    for (;;) {
      const { progressed, error } = yield* read(response);
      if (finished || reading.signal.aborted) return;
      if (progressed) attempt = 0;
      // The body ended without [DONE] and without an error frame, or the connection failed.
      if (streamId === null) {
        yield connectionError('The connection to the gateway was lost and the server does not support resuming.', error);
        return;
      }
      const next = await reattach(error, attempt);
      if (next === null) return;
      if ('failure' in next) {
        yield next.failure;
        return;
      }
      ({ response, attempt } = next);
      onReconnect?.({ attempt, streamId, lastEventId: lastId });
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    network?.removeEventListener('offline', onOffline);
    if (!finished) {
      // Stopped by the caller (abort, or leaving the loop early) or given up: stop
      // generating too, so nobody pays for tokens no one will read.
      reading.abort();
      connection.abort();
      cancel();
    }
  }
}

/** @returns {Network | null} the browser's network status, or null outside a browser */
function browserNetwork() {
  if (typeof window === 'undefined' || typeof navigator === 'undefined' || typeof window.addEventListener !== 'function') {
    return null;
  }
  return {
    get onLine() {
      return navigator.onLine !== false;
    },
    addEventListener: (type, listener) => window.addEventListener(type, listener),
    removeEventListener: (type, listener) => window.removeEventListener(type, listener),
  };
}

/**
 * Resolve on the first `type` event of `target`, or when `signal` aborts.
 * @param {Network} target
 * @param {string} type
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
function waitFor(target, type, signal) {
  return new Promise((resolve) => {
    const done = () => {
      target.removeEventListener(type, done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    if (signal.aborted) return resolve();
    target.addEventListener(type, done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Turn one SSE event of the OpenAI wire into ChatEvents (appended to `out`).
 * @param {SSEEvent} sse
 * @param {ChatEvent[]} out
 * @returns {boolean} true when the frame was an error (the stream ends)
 */
function interpret(sse, out) {
  let chunk;
  try {
    chunk = JSON.parse(sse.data);
  } catch {
    out.push({ type: 'error', error: { message: 'The gateway sent a frame that is not JSON.', type: 'invalid_response' } });
    return true;
  }
  if (chunk === null || typeof chunk !== 'object') return false;
  if (chunk.error) {
    const e = chunk.error;
    out.push({
      type: 'error',
      error: typeof e === 'object' ? { message: String(e.message ?? 'error'), ...e } : { message: String(e) },
    });
    return true;
  }
  for (const choice of Array.isArray(chunk.choices) ? chunk.choices : []) {
    const index = typeof choice.index === 'number' ? choice.index : 0;
    const delta = choice.delta ?? {};
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (typeof reasoning === 'string' && reasoning) out.push({ type: 'reasoning', text: reasoning, choice: index });
    if (typeof delta.content === 'string' && delta.content) out.push({ type: 'text', text: delta.content, choice: index });
    if (Array.isArray(delta.tool_calls)) {
      for (const call of delta.tool_calls) {
        /** @type {ChatEvent} */
        const ev = { type: 'tool_call', index: call.index ?? 0, choice: index };
        if (call.id) ev.id = call.id;
        if (call.function?.name) ev.name = call.function.name;
        if (typeof call.function?.arguments === 'string') ev.arguments = call.function.arguments;
        out.push(ev);
      }
    }
    if (choice.finish_reason) out.push({ type: 'finish', reason: choice.finish_reason, choice: index });
  }
  if (chunk.usage) out.push({ type: 'usage', usage: chunk.usage });
  return false;
}

/**
 * @param {Response} response
 * @returns {Promise<APIError>}
 */
async function apiError(response) {
  const requestId = response.headers.get('X-Request-Id');
  let body = {};
  try {
    const json = await response.json();
    body = json && typeof json === 'object' && json.error ? json.error : json;
  } catch {
    body = { message: `HTTP ${response.status} ${response.statusText}`.trim() };
  }
  return new APIError(response.status, body, requestId);
}

/**
 * @param {string} message
 * @param {unknown} cause
 * @returns {ChatEvent}
 */
function connectionError(message, cause) {
  const detail = cause instanceof Error ? ` (${cause.message})` : '';
  return { type: 'error', error: { message: message + detail, type: 'connection_error', code: 'connection_lost' } };
}

/**
 * Exponential backoff with jitter: a delay between half and all of base * 2^(attempt-1),
 * capped at 8 s.
 * @param {number} base
 * @param {number} attempt
 */
function backoff(base, attempt) {
  const ceiling = Math.min(8000, base * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * @param {number} ms
 * @param {AbortSignal} signal  ends the wait early
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * A function that queues items, with `flush()` to render the queue now and `cancel()` to
 * drop it.
 * @template T
 * @typedef {((item: T) => void) & {flush: () => void, cancel: () => void}} Batcher
 */

/**
 * A chat stream read by a bare `EventSource` (no fetch, no headers): the gateway's
 * `POST /v1/chat/stream` (with the API key in a header) mints a short-lived
 * single-stream token bound to this request, and `new EventSource(url)` starts it with
 * only that token in the URL, never the key. Each `data:` frame is an OpenAI chunk;
 * `onText` gets each piece of text, `onDone` the whole text after `[DONE]` (the source
 * is then closed, so the browser does not reconnect), `onError` a failure. A dropped
 * connection is re-attached by the browser itself (`Last-Event-ID`, same token).
 *
 *   const source = await eventSourceChat({ model: 'local/echo', messages,
 *     onText: (t) => (out.textContent += t) });
 *   // source.close() stops reading
 *
 * @param {{ model: string, messages: unknown[], baseUrl?: string, apiKey?: string,
 *   onText?: (text: string) => void, onDone?: (text: string) => void,
 *   onError?: (error: Error) => void } & Record<string, unknown>} options
 * @returns {Promise<EventSource>}
 */
export async function eventSourceChat(options) {
  const { baseUrl = '/v1', apiKey, onText, onDone, onError, ...body } = options;
  const base = baseUrl.replace(/\/+$/, '');
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(`${base}/chat/stream`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await apiError(response);
  const { url } = await response.json();
  const origin = new URL(base, location.href);
  const source = new EventSource(new URL(url, origin).href);
  let text = '';
  source.onmessage = (event) => {
    if (event.data === '[DONE]') {
      source.close();
      onDone?.(text);
      return;
    }
    const chunk = JSON.parse(event.data);
    if (chunk.error) {
      source.close();
      onError?.(new Error(chunk.error.message));
      return;
    }
    const piece = chunk.choices?.[0]?.delta?.content ?? '';
    if (piece) {
      text += piece;
      onText?.(piece);
    }
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) onError?.(new Error('the stream failed'));
  };
  return source;
}

/**
 * Batch updates per animation frame: `push(item)` any number of times, and `render(items)`
 * runs once in the next frame with everything queued since the last render. Streams
 * deliver dozens of deltas per frame; touching the DOM once per frame keeps long replies
 * cheap. Call `push.flush()` at the end of a stream to render the rest at once.
 * @template T
 * @param {(items: T[]) => void} render
 * @param {(callback: () => void) => unknown} [schedule]  defaults to requestAnimationFrame
 * @returns {Batcher<T>}
 */
export function frameBatcher(render, schedule) {
  const next =
    schedule ??
    (typeof requestAnimationFrame === 'function'
      ? (/** @type {() => void} */ cb) => requestAnimationFrame(cb)
      : (/** @type {() => void} */ cb) => setTimeout(cb, 16));
  /** @type {T[]} */
  let queue = [];
  let scheduled = false;
  let generation = 0; // a cancel or flush makes an already scheduled callback a no-op
  const flush = () => {
    generation += 1;
    scheduled = false;
    if (!queue.length) return;
    const items = queue;
    queue = [];
    render(items);
  };
  /** @type {Batcher<T>} */
  const push = Object.assign(
    (/** @type {T} */ item) => {
      queue.push(item);
      if (scheduled) return;
      scheduled = true;
      const mine = generation;
      next(() => {
        if (mine === generation) flush();
      });
    },
    {
      flush,
      cancel: () => {
        generation += 1;
        scheduled = false;
        queue = [];
      },
    },
  );
  return push;
}
