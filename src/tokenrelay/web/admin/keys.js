// @ts-check
// The keys table: one row per key with its limits, budget meter and use, the two-click
// confirmation of rotate and revoke, and the box that shows a new secret once.
import { els, h } from './dom.js';
import { ago, count, day, money } from './format.js';
import { LIMITS } from './limits.js';
import { state } from './state.js';

/** @typedef {import('./types.js').Key} Key */
/** @typedef {import('./types.js').Spend} Spend */

const PERIOD_WORDS = /** @type {Record<string, string>} */ ({
  daily: 'today',
  monthly: 'this month',
  total: 'in total',
});

export function renderKeys() {
  if (state.armed) return; // a click is waiting for its confirmation: keep its button
  const visible = state.keys.filter(
    (k) => k.status !== 'revoked' || els.showRevoked.checked || state.revokedHere.has(k.id),
  );
  els.keysBody.replaceChildren(...visible.reverse().map(keyRow));
  els.keysEmpty.hidden = visible.length > 0;
}

/**
 * @param {string} label
 * @param {...(Node | string | null)} children
 */
function cell(label, ...children) {
  const td = h('td', '', h('div', 'cell', ...children));
  td.dataset.label = label;
  return td;
}

/** @param {Key} key */
function keyRow(key) {
  const spend = state.spend.get(key.id);
  const tr = h('tr', `key-row ${key.status}`);
  tr.dataset.keyId = key.id;

  const models = key.models
    ? h('span', 'chips', ...key.models.map((m) => h('span', 'chip', m)))
    : h('span', 'muted', 'all');

  const limits = LIMITS.flatMap(({ name, unit, compact }) => {
    const value = key[name];
    return value === null ? [] : [`${compact ? count(value) : value} ${unit}`];
  });

  const used = spend?.requests
    ? h(
        'span',
        '',
        `${count(spend.requests)} request${spend.requests === 1 ? '' : 's'}`,
        spend.last_used_at ? h('small', 'below', `last ${ago(spend.last_used_at)}`) : null,
      )
    : h('span', 'muted', 'never');

  const status = h('span', '', h('span', `status ${key.status}`, key.status));
  if (key.expires_at && key.status !== 'revoked') {
    status.append(
      h(
        'small',
        'below',
        `${key.status === 'expired' ? 'expired' : 'expires'} ${day(key.expires_at)}`,
      ),
    );
  }

  const actions = h('span', 'row-actions');
  if (key.status !== 'revoked') {
    const rotate = h('button', 'button ghost small', 'Rotate');
    rotate.dataset.action = 'rotate';
    const revoke = h('button', 'button ghost small danger', 'Revoke');
    revoke.dataset.action = 'revoke';
    for (const b of [rotate, revoke]) b.setAttribute('type', 'button');
    actions.append(rotate, revoke);
  }

  tr.append(
    cell('Name', h('span', 'key-name', key.name), h('small', 'below mono', key.id)),
    cell('Key', h('code', 'prefix', key.prefix)),
    cell('Models', models),
    cell(
      'Limits',
      limits.length
        ? h('span', 'lines', ...limits.map((l) => h('span', '', l)))
        : h('span', 'muted', 'none'),
    ),
    cell('Budget', budget(key, spend)),
    cell('Used', used),
    cell('Status', status),
    cell('', actions),
  );
  return tr;
}

/**
 * @param {Key} key
 * @param {Spend | undefined} spend
 */
function budget(key, spend) {
  const spent = spend?.spend_usd ?? 0;
  const when = PERIOD_WORDS[key.budget_period] ?? key.budget_period;
  if (key.budget_usd === null) {
    return h('span', '', `${money(spent)} ${when}`, h('small', 'below muted', 'no budget'));
  }
  const ratio = key.budget_usd > 0 ? spent / key.budget_usd : spent > 0 ? 1 : 0;
  const level = ratio >= 1 ? 'over' : ratio >= 0.8 ? 'high' : 'ok';
  const fill = h('span', `meter-fill ${level}`);
  fill.style.width = `${Math.min(100, ratio * 100).toFixed(1)}%`; // CSSOM: allowed by the CSP
  const meter = h('span', 'meter', fill);
  meter.setAttribute('role', 'meter');
  meter.setAttribute('aria-valuemin', '0');
  meter.setAttribute('aria-valuemax', String(key.budget_usd));
  meter.setAttribute('aria-valuenow', String(spent));
  meter.setAttribute('aria-label', `Spend ${when}`);
  return h(
    'span',
    'budget',
    h(
      'span',
      'budget-text',
      `${money(spent)} of ${money(key.budget_usd)}`,
      h('span', 'muted', ` ${when}`),
    ),
    meter,
  );
}

/**
 * Two clicks for a destructive action: the first arms the button, the second (within
 * four seconds) confirms. True on the confirming click.
 * @param {HTMLButtonElement} button
 * @param {string} label
 */
export function confirmed(button, label) {
  if (state.armed === button) {
    disarm();
    return true;
  }
  disarm();
  state.armed = button;
  button.dataset.label = button.textContent ?? '';
  button.textContent = label;
  button.classList.add('armed');
  state.armTimer = window.setTimeout(disarm, 4000);
  return false;
}

function disarm() {
  const button = state.armed;
  state.armed = null;
  window.clearTimeout(state.armTimer);
  if (button) {
    button.textContent = button.dataset.label ?? button.textContent;
    button.classList.remove('armed');
  }
}

/**
 * @param {string} name
 * @param {string} secret
 */
export function showSecret(name, secret) {
  els.secretName.textContent = name;
  els.secretValue.textContent = secret;
  els.secretCopy.textContent = 'Copy';
  els.secretBox.hidden = false;
  els.secretBox.scrollIntoView({ block: 'nearest' });
}

export function hideSecret() {
  els.secretValue.textContent = '';
  els.secretName.textContent = '';
  els.secretBox.hidden = true;
}
