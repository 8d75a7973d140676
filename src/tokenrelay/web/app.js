// @ts-check
// The chat page. Model output is untrusted: it only ever reaches the DOM through
// markdown.js (nodes built from an allow-list, text as text nodes) or textContent.
import { APIError, frameBatcher, streamChat } from './tokenrelay.js';
import { renderMarkdown } from './markdown.js';
import { apiKey, copyText, fetchModels, initTheme, setApiKey } from './common.js';

/** @typedef {{role: 'user' | 'assistant', content: string}} Message */

/**
 * @template {Element} [T=HTMLElement]
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {T}
 */
const $ = (selector, root = document) => /** @type {T} */ (root.querySelector(selector));

const els = {
  model: /** @type {HTMLSelectElement} */ ($('#model')),
  scroll: $('#scroll'),
  conversation: $('#conversation'),
  empty: $('#empty'),
  composer: /** @type {HTMLFormElement} */ ($('#composer')),
  prompt: /** @type {HTMLTextAreaElement} */ ($('#prompt')),
  send: /** @type {HTMLButtonElement} */ ($('#send')),
  stop: /** @type {HTMLButtonElement} */ ($('#stop')),
  keyPanel: $('#key-panel'),
  keyToggle: $('#key-toggle'),
  keyForm: /** @type {HTMLFormElement} */ ($('#key-form')),
  keyInput: /** @type {HTMLInputElement} */ ($('#api-key')),
  keyHint: $('#key-hint'),
};

/** The conversation sent to the model: alternating user and assistant messages. */
/** @type {Message[]} */
let history = [];
/** @type {AbortController | null} */
let running = null;
/** The Markdown source of each reply, for its copy button. */
/** @type {WeakMap<Element, string>} */
const replyText = new WeakMap();

// ---- models and key --------------------------------------------------------------

async function loadModels() {
  try {
    const ids = await fetchModels();
    const saved = localStorage.getItem('tokenrelay.model');
    els.model.replaceChildren(
      ...ids.map((id) => {
        const option = document.createElement('option');
        option.value = id;
        option.textContent = id;
        return option;
      }),
    );
    if (saved && ids.includes(saved)) els.model.value = saved;
    else if (ids.includes('local/echo')) els.model.value = 'local/echo';
    if (!ids.length) els.model.replaceChildren(new Option('No models configured', ''));
    updatePlaceholder();
  } catch (err) {
    els.model.replaceChildren(new Option('Models unavailable', ''));
    if (err instanceof APIError && (err.status === 401 || err.status === 403)) {
      openKeyPanel(`The gateway needs an API key (${err.message}).`);
    }
  }
}

function updatePlaceholder() {
  els.prompt.placeholder = els.model.value ? `Message ${els.model.value}` : 'Send a message';
}

/** @param {string} [why] */
function openKeyPanel(why) {
  els.keyPanel.hidden = false;
  els.keyToggle.setAttribute('aria-expanded', 'true');
  if (why) {
    els.keyHint.textContent = why;
    els.keyHint.classList.add('warn');
  }
  els.keyInput.focus();
}

els.keyInput.value = apiKey();
els.keyToggle.addEventListener('click', () => {
  if (els.keyPanel.hidden) openKeyPanel();
  else {
    els.keyPanel.hidden = true;
    els.keyToggle.setAttribute('aria-expanded', 'false');
  }
});
els.keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  setApiKey(els.keyInput.value.trim());
  els.keyPanel.hidden = true;
  els.keyToggle.setAttribute('aria-expanded', 'false');
  els.keyHint.classList.remove('warn');
  loadModels();
});
$('#key-clear').addEventListener('click', () => {
  els.keyInput.value = '';
  setApiKey('');
});
els.model.addEventListener('change', () => {
  localStorage.setItem('tokenrelay.model', els.model.value);
  updatePlaceholder();
});

// ---- conversation ----------------------------------------------------------------

/** Keep the view pinned to the bottom while a reply grows, unless the user scrolled up. */
let pinned = true;
els.scroll.addEventListener('scroll', () => {
  const s = els.scroll;
  pinned = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
});
function follow() {
  if (pinned) els.scroll.scrollTop = els.scroll.scrollHeight;
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function fromTemplate(id) {
  const tpl = /** @type {HTMLTemplateElement} */ (document.getElementById(id));
  return /** @type {HTMLElement} */ (tpl.content.firstElementChild?.cloneNode(true));
}

/** @param {string} text */
function addUserTurn(text) {
  els.empty.hidden = true;
  const turn = fromTemplate('tpl-user');
  $('.user-text', turn).textContent = text;
  els.conversation.append(turn);
  pinned = true;
  follow();
}

/**
 * A code block in a frame with its language and a copy button.
 * @param {Element} pre
 * @returns {HTMLElement}
 */
function codeFrame(pre) {
  const frame = document.createElement('div');
  frame.className = 'code-frame';
  const head = document.createElement('div');
  head.className = 'code-head';
  const lang = document.createElement('span');
  lang.textContent = pre.getAttribute('data-lang') || 'text';
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.className = 'code-copy';
  copy.textContent = 'Copy';
  head.append(lang, copy);
  frame.append(head);
  return frame;
}

/**
 * Frame every code block of a freshly rendered top-level element.
 * @param {Element} element
 * @returns {Element}
 */
function decorate(element) {
  if (element.tagName === 'PRE') {
    const frame = codeFrame(element);
    frame.append(element);
    return frame;
  }
  for (const pre of element.querySelectorAll('pre')) {
    const frame = codeFrame(pre);
    pre.replaceWith(frame);
    frame.append(pre);
  }
  return element;
}

/**
 * @param {Element} container
 * @param {string} text
 */
function renderReply(container, text) {
  renderMarkdown(container, text, decorate);
}

/**
 * Stream one assistant reply for the current history into a new turn.
 */
async function reply() {
  const model = els.model.value;
  const turn = fromTemplate('tpl-assistant');
  const parts = {
    content: $('.content', turn),
    reasoning: /** @type {HTMLDetailsElement} */ ($('.reasoning', turn)),
    reasoningText: $('.reasoning-text', turn),
    tools: $('.tool-calls', turn),
    typing: $('.typing', turn),
    error: $('.error', turn),
    stopped: $('.stopped', turn),
    stats: $('.stats', turn),
    reconnected: $('.reconnected', turn),
    noticeText: $('.notice-text', turn),
  };
  els.conversation.append(turn);
  for (const old of els.conversation.querySelectorAll('.turn.assistant.last')) old.classList.remove('last');
  turn.classList.add('last', 'streaming');
  follow();

  const controller = new AbortController();
  running = controller;
  setBusy(true);

  let text = '';
  let reasoning = '';
  /** @type {Map<number, {id?: string, name: string, arguments: string}>} */
  const calls = new Map();
  let deltas = 0;
  /** @type {number | null} */
  let completionTokens = null;
  let reconnects = 0;
  const started = performance.now();
  /** @type {number | null} */
  let first = null;
  let finishReason = '';

  const render = () => {
    if (text) renderReply(parts.content, text);
    if (reasoning) {
      parts.reasoning.hidden = false;
      parts.reasoningText.textContent = reasoning;
    }
    if (calls.size) {
      parts.tools.hidden = false;
      parts.tools.replaceChildren(
        ...Array.from(calls.values(), (call) => {
          const box = document.createElement('div');
          box.className = 'tool-call';
          const name = document.createElement('span');
          name.className = 'tool-name';
          name.textContent = `${call.name}(…)`;
          const args = document.createElement('pre');
          args.textContent = call.arguments;
          box.append(name, args);
          return box;
        }),
      );
    }
    parts.typing.hidden = first !== null;
    follow();
  };
  const batch = frameBatcher(render);
  const showOffline = () => {
    parts.reconnected.hidden = false;
    parts.reconnected.classList.add('waiting');
    parts.noticeText.textContent = 'Offline: the reply continues where it stopped once the network is back.';
  };
  window.addEventListener('offline', showOffline);

  try {
    for await (const event of streamChat({
      model,
      messages: history,
      apiKey: apiKey(),
      signal: controller.signal,
      onReconnect: ({ lastEventId }) => {
        reconnects += 1;
        parts.reconnected.hidden = false;
        parts.reconnected.classList.remove('waiting');
        const where = lastEventId ? ` after frame ${lastEventId.split(':').pop()}` : '';
        const times = reconnects === 1 ? '' : ` (${reconnects} drops)`;
        parts.noticeText.textContent = `Reconnected: resumed${where}, no gap, no repeat${times}.`;
      },
    })) {
      if (first === null && event.type !== 'usage') first = performance.now();
      switch (event.type) {
        case 'text':
          text += event.text;
          deltas += 1;
          break;
        case 'reasoning':
          reasoning += event.text;
          break;
        case 'tool_call': {
          const call = calls.get(event.index) ?? { name: '', arguments: '' };
          if (event.id) call.id = event.id;
          if (event.name) call.name += event.name;
          if (event.arguments) call.arguments += event.arguments;
          calls.set(event.index, call);
          deltas += 1;
          break;
        }
        case 'finish':
          finishReason = event.reason;
          break;
        case 'usage':
          completionTokens = event.usage.completion_tokens ?? null;
          break;
        case 'error':
          showError(parts.error, event.error.message, event.error.code ?? event.error.type);
          break;
      }
      batch(event);
    }
  } catch (err) {
    if (err instanceof APIError) {
      showError(parts.error, err.message, `${err.status}${err.code ? ` · ${err.code}` : ''}`);
      if (err.status === 401) openKeyPanel('The gateway refused the key: enter a valid one.');
    } else {
      showError(parts.error, `Could not reach the gateway: ${err instanceof Error ? err.message : err}`, 'network');
    }
  }
  window.removeEventListener('offline', showOffline);
  batch.flush();
  render();
  parts.typing.hidden = true;
  turn.classList.remove('streaming');
  const stopped = controller.signal.aborted;
  if (stopped) {
    parts.stopped.hidden = false;
    turn.classList.add('stopped');
  }
  const ended = performance.now();
  parts.stats.textContent = stats({
    model,
    ttft: first === null ? null : first - started,
    seconds: first === null ? 0 : (ended - first) / 1000,
    tokens: completionTokens ?? deltas,
    estimated: completionTokens === null,
    finishReason: stopped ? '' : finishReason,
  });
  replyText.set(turn, text);
  // A reply that failed before any text is not part of the conversation: Regenerate
  // (or the next message) asks again.
  if (text) history.push({ role: 'assistant', content: text });
  running = null;
  setBusy(false);
}

/**
 * @param {{model: string, ttft: number | null, seconds: number, tokens: number, estimated: boolean, finishReason: string}} s
 */
function stats(s) {
  const bits = [s.model];
  if (s.ttft !== null) bits.push(`TTFT ${Math.round(s.ttft)} ms`);
  // Speed needs a measurable span: a cached or replayed answer arrives all at once.
  if (s.tokens > 1 && s.seconds >= 0.1) bits.push(`${((s.tokens - 1) / s.seconds).toFixed(1)} tok/s`);
  if (s.tokens) bits.push(`${s.estimated ? '~' : ''}${s.tokens} tokens`);
  if (s.finishReason && s.finishReason !== 'stop') bits.push(`finish: ${s.finishReason}`);
  return bits.join(' · ');
}

/**
 * @param {HTMLElement} box
 * @param {string} message
 * @param {string | null | undefined} code
 */
function showError(box, message, code) {
  box.hidden = false;
  const label = document.createElement('strong');
  label.textContent = code ? `Error (${code}) ` : 'Error ';
  box.replaceChildren(label, document.createTextNode(message));
}

/** @param {boolean} busy */
function setBusy(busy) {
  els.send.hidden = busy;
  els.stop.hidden = !busy;
  document.body.classList.toggle('busy', busy);
}

function stop() {
  running?.abort();
}

async function submit() {
  const text = els.prompt.value.trim();
  if (!text || running) return;
  if (!els.model.value) {
    els.model.focus();
    return;
  }
  els.prompt.value = '';
  autosize();
  history.push({ role: 'user', content: text });
  addUserTurn(text);
  await reply();
}

async function regenerate() {
  if (running) return;
  if (history.at(-1)?.role === 'assistant') history.pop();
  if (history.at(-1)?.role !== 'user') return;
  els.conversation.querySelector('.turn.assistant.last')?.remove();
  await reply();
}

function newChat() {
  stop();
  history = [];
  for (const turn of els.conversation.querySelectorAll('.turn')) turn.remove();
  els.empty.hidden = false;
  els.prompt.focus();
}

// ---- events ----------------------------------------------------------------------

function autosize() {
  els.prompt.style.height = 'auto';
  els.prompt.style.height = `${Math.min(els.prompt.scrollHeight, 240)}px`;
}

els.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  submit();
});
els.prompt.addEventListener('input', autosize);
els.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && running) stop();
});
els.stop.addEventListener('click', stop);
$('#new-chat').addEventListener('click', newChat);

for (const button of document.querySelectorAll('.suggestion')) {
  button.addEventListener('click', () => {
    els.prompt.value = button.getAttribute('data-prompt') ?? '';
    autosize();
    els.prompt.focus();
  });
}

// One listener for every copy and regenerate button, present and future.
els.conversation.addEventListener('click', async (event) => {
  const target = /** @type {Element} */ (event.target);
  const button = target.closest('button');
  if (!button) return;
  if (button.classList.contains('code-copy')) {
    const code = button.closest('.code-frame')?.querySelector('code');
    await flash(button, copyText(code?.textContent ?? ''));
  } else if (button.classList.contains('copy-reply')) {
    const turn = button.closest('.turn');
    await flash(button, copyText((turn && replyText.get(turn)) ?? ''));
  } else if (button.classList.contains('regenerate')) {
    regenerate();
  }
});

/**
 * Show "Copied" on a button for a moment.
 * @param {HTMLButtonElement} button
 * @param {Promise<boolean>} done
 */
async function flash(button, done) {
  const ok = await done;
  const label = button.querySelector('span') ?? button;
  const before = label.textContent;
  label.textContent = ok ? 'Copied' : 'Copy failed';
  button.classList.add('done');
  setTimeout(() => {
    label.textContent = before;
    button.classList.remove('done');
  }, 1200);
}

initTheme();
loadModels();
els.prompt.focus();
