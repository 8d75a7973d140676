// @ts-check
// The channels section: every provider the gateway serves (the config file's, read-only,
// and the database's, editable), their upstream keys shown masked with their state, and
// a form that creates or edits a channel. Keys typed into the form are sent once and
// never come back (the API shows only their last 4 characters).
import { api, errorText } from './api.js';
import { $, h, say } from './dom.js';

/**
 * @typedef {{id: string, masked: string, state: string, served: number}} ChannelKey
 * @typedef {{name: string, source: string, read_only: boolean, protocol: string,
 *   base_url: string, models: string[], headers: Record<string, string>,
 *   timeouts: Record<string, number>, images: boolean, enabled: boolean, weight: number,
 *   limits: Record<string, number>, served: boolean,
 *   keys: ChannelKey[], id: string | null, problem: string | null}} Channel
 */

const el = {
  body: $('#channels-body'),
  error: $('#channels-error'),
  add: $('#new-channel'),
  form: /** @type {HTMLFormElement} */ ($('#channel-form')),
  formTitle: $('#channel-form-title'),
  formError: $('#channel-form-error'),
  cancel: $('#channel-cancel'),
  name: /** @type {HTMLInputElement} */ ($('#c-name')),
  protocol: /** @type {HTMLSelectElement} */ ($('#c-protocol')),
  baseUrl: /** @type {HTMLInputElement} */ ($('#c-base-url')),
  models: /** @type {HTMLInputElement} */ ($('#c-models')),
  weight: /** @type {HTMLInputElement} */ ($('#c-weight')),
  timeouts: /** @type {HTMLInputElement} */ ($('#c-timeouts')),
  limits: /** @type {HTMLInputElement} */ ($('#c-limits')),
  keys: /** @type {HTMLTextAreaElement} */ ($('#c-keys')),
};

/** @type {{channels: Channel[], editing: string | null, onAuth: (err: unknown) => boolean}} */
const state = { channels: [], editing: null, onAuth: () => false };

export async function loadChannels() {
  try {
    const list = await api('/admin/channels');
    state.channels = list.data;
    say(el.error);
    render();
  } catch (err) {
    if (!state.onAuth(err)) say(el.error, `Could not load the channels: ${errorText(err)}`);
  }
}

function render() {
  el.body.replaceChildren(...state.channels.map(row));
}

/** @param {Channel} c */
function row(c) {
  const tr = h('tr', `channel-row${c.enabled ? '' : ' disabled'}`);
  tr.dataset.channel = c.name;
  const status = c.problem
    ? h('span', 'status expired', 'not served')
    : h('span', `status ${c.enabled ? 'active' : 'revoked'}`, c.enabled ? 'enabled' : 'disabled');
  if (c.problem) status.title = c.problem;
  const keys = h(
    'div',
    'channel-keys',
    ...(c.keys.length
      ? c.keys.map((k) => {
          const chip = h('code', `key-chip ${k.state}`, `${k.masked} · ${k.state}`);
          chip.title = `${k.id}: ${k.served} requests on this replica`;
          return chip;
        })
      : [h('span', 'fine', 'no key')]),
  );
  const actions = h('div', 'row-actions');
  if (c.read_only) {
    actions.append(h('span', 'fine', 'config file (read-only)'));
  } else {
    actions.append(
      button('edit', 'Edit'),
      button('toggle', c.enabled ? 'Disable' : 'Enable'),
      button('delete', 'Delete'),
    );
  }
  tr.append(
    td('Name', h('strong', '', c.name)),
    td('Protocol', c.protocol),
    td('Base URL', h('code', 'url', c.base_url)),
    td('Models', c.models.join(', ')),
    td('Weight', timed(c)),
    td('Keys', keys),
    td('Status', status),
    h('td', '', actions),
  );
  return tr;
}

/**
 * The weight, with the channel's timeouts and limits under it when it sets any.
 * @param {Channel} c
 */
function timed(c) {
  const lines = [
    Object.entries(c.timeouts).map(([k, v]) => `${k} ${v} s`),
    Object.entries(c.limits).map(([k, v]) => `${k} ${v}`),
  ].filter((parts) => parts.length);
  return h(
    'span',
    '',
    String(c.weight),
    ...lines.map((parts) => h('small', 'fine timeouts', parts.join(' · '))),
  );
}

/** @param {Record<string, number>} pairs */
function joined(pairs) {
  return Object.entries(pairs)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

/**
 * "first_token=60, total=600" as {first_token: 60, total: 600}; throws an Error naming
 * a part that is not NAME=NUMBER (the API judges the names and values).
 * @param {string} text
 */
export function parsePairs(text) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const [name, value, ...rest] = part.split('=');
    const seconds = Number(value);
    if (!name || value === undefined || rest.length || !Number.isFinite(seconds)) {
      throw new Error(`"${part}" is not NAME=NUMBER`);
    }
    out[name] = seconds;
  }
  return out;
}

/**
 * @param {string} action
 * @param {string} label
 */
function button(action, label) {
  const b = h('button', 'button ghost small', label);
  b.setAttribute('type', 'button');
  b.dataset.action = action;
  return b;
}

/**
 * @param {string} label
 * @param {Node | string} child
 */
function td(label, child) {
  const cell = h('td', '', h('div', 'cell', child));
  cell.dataset.label = label;
  return cell;
}

/** @param {Channel | null} channel  null: a new one */
function openForm(channel) {
  state.editing = channel ? channel.name : null;
  el.formTitle.textContent = channel ? `Edit ${channel.name}` : 'New channel';
  el.name.value = channel?.name ?? '';
  el.protocol.value = channel?.protocol ?? 'openai';
  el.baseUrl.value = channel?.base_url ?? '';
  el.models.value = channel ? channel.models.join(', ') : '*';
  el.weight.value = String(channel?.weight ?? 1);
  el.timeouts.value = channel ? joined(channel.timeouts) : '';
  el.limits.value = channel ? joined(channel.limits) : '';
  el.keys.value = '';
  el.keys.placeholder = channel?.keys.length
    ? 'unchanged (type keys, one a line, to replace them)'
    : 'one upstream key a line';
  say(el.formError);
  el.form.hidden = false;
  el.name.focus();
}

/** @param {SubmitEvent} event */
async function submit(event) {
  event.preventDefault();
  say(el.formError);
  const keys = el.keys.value
    .split('\n')
    .map((k) => k.trim())
    .filter(Boolean);
  let timeouts, limits;
  try {
    timeouts = parsePairs(el.timeouts.value);
    limits = parsePairs(el.limits.value);
  } catch (err) {
    say(el.formError, err instanceof Error ? err.message : String(err));
    return;
  }
  /** @type {Record<string, unknown>} */
  const body = {
    weight: Number(el.weight.value || '1'),
    timeouts,
    limits,
    name: el.name.value.trim(),
    protocol: el.protocol.value,
    base_url: el.baseUrl.value.trim(),
    models: el.models.value
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean),
  };
  if (keys.length || state.editing === null) body.api_keys = keys;
  try {
    if (state.editing === null) await api('/admin/channels', { method: 'POST', body });
    else {
      const path = `/admin/channels/${encodeURIComponent(state.editing)}`;
      await api(path, { method: 'PATCH', body });
    }
    el.keys.value = '';
    el.form.hidden = true;
    await loadChannels();
  } catch (err) {
    if (!state.onAuth(err)) say(el.formError, errorText(err));
  }
}

/**
 * @param {string} name
 * @param {string} action
 */
async function act(name, action) {
  const channel = state.channels.find((c) => c.name === name);
  if (!channel) return;
  if (action === 'edit') {
    openForm(channel);
    return;
  }
  const path = `/admin/channels/${encodeURIComponent(name)}`;
  try {
    if (action === 'toggle') {
      await api(path, { method: 'PATCH', body: { enabled: !channel.enabled } });
    } else if (action === 'delete') {
      await api(path, { method: 'DELETE' });
    }
  } catch (err) {
    if (!state.onAuth(err)) say(el.error, `Could not ${action} ${name}: ${errorText(err)}`);
  }
  await loadChannels();
}

/** @param {(err: unknown) => boolean} onAuth  handles a refused master key */
export function initChannels(onAuth) {
  state.onAuth = onAuth;
  el.add.addEventListener('click', () => openForm(null));
  el.cancel.addEventListener('click', () => {
    el.form.hidden = true;
  });
  el.form.addEventListener('submit', submit);
  el.body.addEventListener('click', (event) => {
    const b = /** @type {HTMLElement} */ (event.target).closest('button[data-action]');
    if (!(b instanceof HTMLButtonElement)) return;
    const tr = /** @type {HTMLElement} */ (b.closest('tr'));
    act(tr.dataset.channel ?? '', b.dataset.action ?? '');
  });
}
