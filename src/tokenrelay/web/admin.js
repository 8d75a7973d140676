// @ts-check
// The operator's dashboard (/admin): keys, spend against budgets, and usage by model
// over time. Everything comes from the admin API (/admin/keys, /admin/stats,
// /admin/stats/spend) with the master key, which lives in sessionStorage (this tab
// only). The charts are uPlot, vendored under /static/vendor/uplot/ and loaded by a
// classic deferred script before this module runs. No HTML is ever parsed from data:
// every node is built with createElement and text goes in as text.
//
// The parts are ES modules under /static/admin/: api.js (the client), format.js,
// dom.js, state.js, charts.js and stats.js (the charts and totals), keys.js (the
// table), form.js (the new-key form), limits.js (the limit fields), channels.js (the
// channels section) and health.js (the deployments, in or out, and their test). This
// one wires them: the master key panel, loading, the actions that call the API, the
// events.

import { copyText, initTheme } from './common.js';
import { AdminError, api, errorText, masterKey, setMasterKey } from './admin/api.js';
import { initChannels, loadChannels } from './admin/channels.js';
import { renderDeployments } from './admin/health.js';
import { destroyCharts, toggleModel } from './admin/charts.js';
import { $, els, say } from './admin/dom.js';
import { FieldError, createBody, markField, toggleCreate } from './admin/form.js';
import { confirmed, hideSecret, renderKeys, showSecret } from './admin/keys.js';
import { PERIODS, state } from './admin/state.js';
import { renderStats } from './admin/stats.js';

/** @typedef {import('./admin/types.js').Spend} Spend */

const PERIOD = 'tokenrelay.admin.period';
const REFRESH_MS = 30_000;

// ---- master key, locked and unlocked ----------------------------------------------

/** @param {string} [why] */
function openKeyPanel(why) {
  els.keyPanel.hidden = false;
  els.keyToggle.setAttribute('aria-expanded', 'true');
  els.keyHint.textContent =
    why ?? 'Kept in this tab only (sessionStorage); sent as a Bearer token to the admin API.';
  els.keyHint.classList.toggle('warn', Boolean(why));
  els.keyInput.focus();
}

function closeKeyPanel() {
  els.keyPanel.hidden = true;
  els.keyToggle.setAttribute('aria-expanded', 'false');
}

/** @param {string} [why] */
function lock(why) {
  els.dashboard.hidden = true;
  els.locked.hidden = false;
  say(els.banner);
  destroyCharts();
  openKeyPanel(why);
}

/** @param {unknown} err  true when it locked the page */
function authFailure(err) {
  if (!(err instanceof AdminError)) return false;
  if (err.status === 401) {
    lock(`The master key was refused: ${err.message}`);
    return true;
  }
  if (err.status === 403) {
    lock();
    say(els.banner, `${err.message} Set master_key in the config (or TOKENRELAY_MASTER_KEY).`);
    return true;
  }
  return false;
}

// ---- loading ----------------------------------------------------------------------

async function refresh() {
  if (!masterKey()) {
    lock();
    return;
  }
  if (state.loading) {
    state.again = true; // e.g. another period was picked meanwhile: load once more after
    return;
  }
  state.loading = true;
  state.again = false;
  els.refresh.classList.add('busy');
  try {
    const bucket = PERIODS[state.period];
    const [keys, spend, stats] = await Promise.allSettled([
      api('/admin/keys?include_revoked=true'),
      api('/admin/stats/spend'),
      api(`/admin/stats?since=${state.period}&bucket=${bucket}`),
    ]);
    const failures = [keys, spend, stats].flatMap((r) =>
      r.status === 'rejected' ? [r.reason] : [],
    );
    if (failures.some(authFailure)) return;
    if (!els.locked.hidden) closeKeyPanel();
    els.locked.hidden = true;
    els.dashboard.hidden = false;
    say(els.banner, failures.length ? errorText(failures[0]) : '');
    if (keys.status === 'fulfilled') state.keys = keys.value.data;
    if (spend.status === 'fulfilled') {
      state.spend = new Map(spend.value.data.map((/** @type {Spend} */ s) => [s.key_id, s]));
    }
    if (keys.status === 'fulfilled' || spend.status === 'fulfilled') renderKeys();
    if (stats.status === 'fulfilled') {
      state.stats = stats.value;
      renderStats(stats.value);
    }
    await loadChannels();
    renderDeployments();
    if (!failures.length) els.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.loading = false;
    els.refresh.classList.remove('busy');
  }
  if (state.again) await refresh();
}

/**
 * @param {string} id
 * @param {'revoke' | 'rotate'} action
 */
async function keyAction(id, action) {
  say(els.keysError);
  try {
    const result = await api(`/admin/keys/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
    if (action === 'rotate') showSecret(result.key.name, result.secret);
    else state.revokedHere.add(id);
  } catch (err) {
    if (authFailure(err)) return;
    say(els.keysError, `Could not ${action} the key: ${errorText(err)}`);
  }
  await refresh();
}

// ---- create ---------------------------------------------------------------------------

/** @param {SubmitEvent} event */
async function createKey(event) {
  event.preventDefault();
  say(els.createError);
  markField(null);
  let body;
  try {
    body = createBody();
  } catch (err) {
    if (!(err instanceof FieldError)) throw err;
    say(els.createError, err.message);
    markField(err.param);
    return;
  }
  const submit = /** @type {HTMLButtonElement} */ ($('button[type=submit]', els.createForm));
  submit.disabled = true;
  try {
    const created = await api('/admin/keys', { method: 'POST', body });
    els.createForm.reset();
    toggleCreate(false);
    showSecret(created.key.name, created.secret);
    await refresh();
  } catch (err) {
    if (authFailure(err)) return;
    say(els.createError, errorText(err));
    if (err instanceof AdminError) markField(err.param);
  } finally {
    submit.disabled = false;
  }
}

// ---- wiring -------------------------------------------------------------------------

/** @param {string} period */
function selectPeriod(period) {
  state.period = period in PERIODS ? period : '24h';
  for (const button of els.period.querySelectorAll('button')) {
    button.setAttribute('aria-pressed', String(button.dataset.period === state.period));
  }
}

function init() {
  initTheme();
  let saved = '24h';
  try {
    saved = localStorage.getItem(PERIOD) ?? '24h';
  } catch {
    /* storage disabled */
  }
  selectPeriod(saved);

  els.keyToggle.addEventListener('click', () => {
    if (els.keyPanel.hidden) openKeyPanel();
    else closeKeyPanel();
  });
  els.keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = els.keyInput.value.trim();
    if (!key) {
      openKeyPanel('Enter the master key.');
      return;
    }
    setMasterKey(key);
    els.keyInput.value = '';
    els.keyHint.classList.remove('warn');
    closeKeyPanel();
    refresh();
  });
  els.keyClear.addEventListener('click', () => {
    setMasterKey('');
    els.keyInput.value = '';
    hideSecret();
    state.keys = [];
    state.spend = new Map();
    els.keysBody.replaceChildren();
    lock();
  });
  els.refresh.addEventListener('click', () => refresh());
  els.period.addEventListener('click', (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest('button');
    if (!button?.dataset.period) return;
    selectPeriod(button.dataset.period);
    try {
      localStorage.setItem(PERIOD, state.period);
    } catch {
      /* not remembered */
    }
    refresh();
  });
  els.showRevoked.addEventListener('change', renderKeys);
  $('#legend').addEventListener('click', (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest('.legend-item');
    if (button instanceof HTMLElement && button.dataset.model) toggleModel(button.dataset.model);
  });
  els.newKey.addEventListener('click', () => toggleCreate(els.createForm.hidden));
  els.createCancel.addEventListener('click', () => {
    els.createForm.reset();
    say(els.createError);
    markField(null);
    toggleCreate(false);
  });
  els.createForm.addEventListener('submit', createKey);
  els.secretCopy.addEventListener('click', async () => {
    const ok = await copyText(els.secretValue.textContent ?? '');
    els.secretCopy.textContent = ok ? 'Copied' : 'Select and copy';
  });
  els.secretDone.addEventListener('click', hideSecret);
  initChannels(authFailure);
  els.keysBody.addEventListener('click', (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest('button[data-action]');
    if (!(button instanceof HTMLButtonElement)) return;
    const row = /** @type {HTMLElement} */ (button.closest('tr'));
    const id = row.dataset.keyId ?? '';
    const action = button.dataset.action === 'rotate' ? 'rotate' : 'revoke';
    if (!confirmed(button, action === 'rotate' ? 'Confirm rotate' : 'Confirm revoke')) return;
    button.disabled = true;
    keyAction(id, action);
  });

  // A theme switch redraws the charts in the new colours.
  const redraw = () => state.stats && renderStats(state.stats);
  new MutationObserver(redraw).observe(document.documentElement, {
    attributeFilter: ['data-theme'],
  });
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', redraw);

  window.setInterval(() => {
    if (!document.hidden && !els.dashboard.hidden) refresh();
  }, REFRESH_MS);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !els.dashboard.hidden) refresh();
  });

  if (masterKey()) refresh();
  else lock();
}

init();
