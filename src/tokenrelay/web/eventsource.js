// @ts-check
// The EventSource demo page: a bare EventSource, no SDK, as a tutorial would write it.
// 1. POST /v1/chat/stream with the request (and the API key in a header): a token.
// 2. new EventSource(url): the stream, with only the single-stream token in its URL.
// 3. onmessage: each data frame is an OpenAI chunk; [DONE] ends it (close the source,
//    or the browser reconnects).

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('form'));
const output = $('output');
const statusEl = $('status');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const model = /** @type {HTMLInputElement} */ ($('model')).value;
  const key = /** @type {HTMLInputElement} */ ($('key')).value;
  const prompt = /** @type {HTMLTextAreaElement} */ ($('prompt')).value;
  output.textContent = '';
  statusEl.textContent = 'starting';
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const minted = await fetch('/v1/chat/stream', {
    method: 'POST',
    headers,
    body: JSON.stringify({ model, messages: [{ role: 'user', content: prompt }] }),
  });
  const answer = await minted.json();
  if (!minted.ok) {
    statusEl.textContent = `error: ${answer.error?.message ?? minted.status}`;
    return;
  }
  const source = new EventSource(answer.url);
  statusEl.textContent = 'streaming';
  source.onmessage = (message) => {
    if (message.data === '[DONE]') {
      source.close();
      statusEl.textContent = 'done';
      return;
    }
    const chunk = JSON.parse(message.data);
    if (chunk.error) {
      source.close();
      statusEl.textContent = `error: ${chunk.error.message}`;
      return;
    }
    output.textContent += chunk.choices?.[0]?.delta?.content ?? '';
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) statusEl.textContent = 'error: the stream failed';
  };
});
