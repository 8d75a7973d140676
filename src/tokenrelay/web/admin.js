// The operator's dashboard (/admin): keys, spend against budgets, and usage by model
// over time. Everything comes from the admin API (/admin/keys, /admin/stats,
// /admin/stats/spend) with the master key, which lives in sessionStorage (this tab
// only). The charts are uPlot, vendored under /static/vendor/uplot/ and loaded by a
// classic deferred script before this module runs. No HTML is ever parsed from data:
// every node is built with createElement and text goes in as text.
import { copyText, initTheme } from './common.js';

/** @typedef {{message?: string, type?: string, code?: string | null, param?: string | null}} ErrorBody */
/**
 * @typedef {{id: string, name: string, prefix: string, models: string[] | null,
 *   rpm: number | null, tpm: number | null, max_concurrent: number | null,
 *   budget_usd: number | null, budget_period: string, expires_at: string | null,
 *   created_at: string, revoked_at: string | null, status: string}} Key
 */
/**
 * @typedef {{key_id: string, spend_usd: number, total_spend_usd: number,
 *   requests: number, last_used_at: string | null, period_start: string | null}} Spend
 */
/**
 * @typedef {{requests: number, input_tokens: number, output_tokens: number,
 *   cost_usd: number, errors: number, client_ended: number, error_rate: number | null,
 *   ttft_p50_ms: number | null, ttft_p95_ms: number | null}} Totals
 */
/** @typedef {{model: string, totals: Totals, series: Record<string, (number | null)[]>}} ModelStats */
/** @typedef {{bucket: string, buckets: string[], totals: Totals, models: ModelStats[]}} Stats */

const KEY = 'tokenrelay.masterKey';
const PERIOD = 'tokenrelay.admin.period';
/** Period → bucket size. */
const PERIODS = /** @type {Record<string, string>} */ ({
  '24h': 'hour',
  '7d': 'hour',
  '30d': 'day',
  '90d': 'day',
});
const REFRESH_MS = 30_000;
// Mid-tone colours that read on the light and the dark background alike.
const PALETTE = [
  '#6366f1',
  '#14b8a6',
  '#f59e0b',
  '#ec4899',
  '#0ea5e9',
  '#a855f7',
  '#84cc16',
  '#f97316',
  '#ef4444',
  '#64748b',
];
const PERIOD_WORDS = /** @type {Record<string, string>} */ ({
  daily: 'today',
  monthly: 'this month',
  total: 'in total',
});

/**
 * @template {Element} [T=HTMLElement]
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {T}
 */
const $ = (selector, root = document) => /** @type {T} */ (root.querySelector(selector));

const els = {
  banner: $('#banner'),
  locked: $('#locked'),
  dashboard: $('#dashboard'),
  keyPanel: $('#key-panel'),
  keyToggle: $('#key-toggle'),
  keyForm: /** @type {HTMLFormElement} */ ($('#key-form')),
  keyInput: /** @type {HTMLInputElement} */ ($('#master-key')),
  keyHint: $('#key-hint'),
  keyClear: $('#key-clear'),
  refresh: $('#refresh'),
  period: $('#period'),
  updated: $('#updated'),
  chartNote: $('#chart-note'),
  showRevoked: /** @type {HTMLInputElement} */ ($('#show-revoked')),
  newKey: $('#new-key'),
  createForm: /** @type {HTMLFormElement} */ ($('#create-form')),
  createError: $('#create-error'),
  createCancel: $('#create-cancel'),
  secretBox: $('#secret-box'),
  secretName: $('#secret-name'),
  secretValue: $('#secret-value'),
  secretCopy: $('#secret-copy'),
  secretDone: $('#secret-done'),
  keysError: $('#keys-error'),
  keysBody: $('#keys-body'),
  keysEmpty: $('#keys-empty'),
};

const state = {
  period: '24h',
  /** @type {Key[]} */
  keys: [],
  /** @type {Map<string, Spend>} */
  spend: new Map(),
  /** @type {Stats | null} */
  stats: null,
  /** Keys revoked from this page: still listed (as revoked) until the next visit. */
  /** @type {Set<string>} */
  revokedHere: new Set(),
  /** @type {HTMLButtonElement | null} */
  armed: null,
  armTimer: 0,
  loading: false,
  again: false,
};

// ---- the admin API --------------------------------------------------------------

class AdminError extends Error {
  /**
   * @param {number} status  0 when the gateway could not be reached
   * @param {ErrorBody} body
   */
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code ?? null;
    this.param = body.param ?? null;
  }
}

function masterKey() {
  try {
    return sessionStorage.getItem(KEY) ?? '';
  } catch {
    return '';
  }
}

/** @param {string} key  an empty string forgets it */
function setMasterKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: nothing is remembered */
  }
}

/**
 * @param {string} path
 * @param {{method?: string, body?: unknown}} [options]
 * @returns {Promise<any>}
 */
async function api(path, options = {}) {
  /** @type {Record<string, string>} */
  const headers = { Authorization: `Bearer ${masterKey()}` };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: 'no-store',
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new AdminError(0, { message: `The gateway is unreachable (${why}).`, code: 'network' });
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    throw new AdminError(response.status, json?.error ?? { message: `HTTP ${response.status}` });
  }
  return json;
}

// ---- formatting -----------------------------------------------------------------

const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat('en');

/** @param {number} n */
function count(n) {
  return Math.abs(n) >= 10_000 ? compact.format(n) : whole.format(Math.round(n * 100) / 100);
}

/** @param {number} usd */
function money(usd) {
  if (usd === 0) return '$0';
  if (Math.abs(usd) < 0.01) return `$${Number(usd.toPrecision(2))}`;
  if (Math.abs(usd) < 10_000) return `$${usd.toFixed(2)}`;
  return `$${compact.format(usd)}`;
}

/** @param {number} rate  0..1 */
function percent(rate) {
  const p = rate * 100;
  return `${p !== 0 && p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

/** @param {number} ms */
function millis(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** @param {string} iso */
function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86_400)} d ago`;
}

/** @param {string} iso */
function day(iso) {
  return iso.slice(0, 10);
}

// ---- DOM helpers ----------------------------------------------------------------

/**
 * An element with a class and children (strings become text nodes).
 * @param {string} tag
 * @param {string} [className]
 * @param {...(Node | string | null)} children
 */
function h(tag, className = '', ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const child of children) if (child !== null) el.append(child);
  return el;
}

/**
 * @param {HTMLElement} el
 * @param {string} [message]  none hides it
 */
function say(el, message) {
  el.textContent = message ?? '';
  el.hidden = !message;
}

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
      renderStats();
    }
    if (!failures.length) els.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.loading = false;
    els.refresh.classList.remove('busy');
  }
  if (state.again) await refresh();
}

/** @param {unknown} err */
function errorText(err) {
  if (err instanceof AdminError) {
    return err.status ? `${err.status} ${err.code ?? ''}: ${err.message}` : err.message;
  }
  return String(err);
}

// ---- totals -------------------------------------------------------------------------

/**
 * @param {string} id
 * @param {string} text
 */
function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

function renderStats() {
  const stats = state.stats;
  if (!stats) return;
  const t = stats.totals;
  setText('total-requests', count(t.requests));
  const n = stats.models.length;
  setText('total-models', n === 1 ? '1 model' : `${n} models`);
  setText('total-tokens', `${count(t.input_tokens)} / ${count(t.output_tokens)}`);
  setText('total-tokens-sub', `${count(t.input_tokens + t.output_tokens)} in all`);
  setText('total-cost', money(t.cost_usd));
  setText('total-cost-sub', t.requests ? `${money(t.cost_usd / t.requests)} per request` : '');
  setText('total-errors', t.error_rate === null ? '–' : percent(t.error_rate));
  const ended = t.client_ended ? ` · ${count(t.client_ended)} stopped by clients` : '';
  setText('total-errors-sub', `${count(t.errors)} errors${ended}`);
  setText(
    'total-ttft',
    t.ttft_p50_ms === null || t.ttft_p95_ms === null
      ? '–'
      : `${millis(t.ttft_p50_ms)} / ${millis(t.ttft_p95_ms)}`,
  );
  els.chartNote.textContent =
    stats.bucket === 'day'
      ? 'One point per UTC day. Drag across a chart to zoom in, double-click to zoom out.'
      : 'One point per hour, in your time zone. Drag across a chart to zoom in, double-click to zoom out.';
  renderCharts(stats);
}

// ---- charts ---------------------------------------------------------------------------

/**
 * @typedef {{id: string, metrics: string[], format: (v: number) => string,
 *   counts?: boolean, rate?: boolean, fill?: boolean}} ChartDef
 */
/** @type {ChartDef[]} */
const CHARTS = [
  { id: 'chart-requests', metrics: ['requests'], format: count, counts: true, fill: true },
  { id: 'chart-cost', metrics: ['cost_usd'], format: money, fill: true },
  { id: 'chart-input', metrics: ['input_tokens'], format: count, counts: true, fill: true },
  { id: 'chart-output', metrics: ['output_tokens'], format: count, counts: true, fill: true },
  { id: 'chart-errors', metrics: ['error_rate'], format: percent, rate: true },
  { id: 'chart-ttft', metrics: ['ttft_p50_ms', 'ttft_p95_ms'], format: millis },
];
const COUNT_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500];
for (let i = 3; i < 12; i++) for (const m of [1, 2, 2.5, 5]) COUNT_STEPS.push(m * 10 ** i);

/** @type {Map<string, {plot: any, signature: string, observer: ResizeObserver}>} */
const charts = new Map();
/** Models hidden from every chart by a click on the legend. */
/** @type {Set<string>} */
const hiddenModels = new Set();
/** The chart under the pointer: only it shows a tooltip (the others show the cursor). */
/** @type {any} */
let hovered = null;

/** @param {string} id */
function dropChart(id) {
  const chart = charts.get(id);
  if (!chart) return;
  chart.observer.disconnect();
  chart.plot.destroy();
  charts.delete(id);
}

function destroyCharts() {
  for (const id of [...charts.keys()]) dropChart(id);
}

/** @param {string} name */
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/**
 * @param {string} hex  #rrggbb
 * @param {number} alpha
 */
function tint(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** @param {HTMLElement} box */
function chartHeight(box) {
  return box.clientWidth < 420 ? 180 : 210;
}

/** @param {number} i */
function color(i) {
  return PALETTE[i % PALETTE.length];
}

/** @param {Stats} stats */
function renderLegend(stats) {
  const legend = $('#legend');
  legend.replaceChildren(
    ...stats.models.map((m, i) => {
      const button = h(
        'button',
        'legend-item',
        h('span', 'swatch'),
        h('span', 'legend-name', m.model),
        h('span', 'legend-count', count(m.totals.requests)),
      );
      button.setAttribute('type', 'button');
      button.setAttribute('aria-pressed', String(!hiddenModels.has(m.model)));
      button.title = `${m.model}: ${count(m.totals.requests)} requests, ${money(m.totals.cost_usd)}`;
      /** @type {HTMLElement} */ (button.firstChild).style.background = color(i); // CSSOM
      button.dataset.model = m.model;
      return button;
    }),
  );
  legend.hidden = stats.models.length === 0;
}

/** @param {string} model */
function toggleModel(model) {
  if (hiddenModels.has(model)) hiddenModels.delete(model);
  else hiddenModels.add(model);
  const show = !hiddenModels.has(model);
  for (const button of document.querySelectorAll('#legend .legend-item')) {
    if (/** @type {HTMLElement} */ (button).dataset.model === model) {
      button.setAttribute('aria-pressed', String(show));
    }
  }
  for (const { plot } of charts.values()) {
    plot.series.forEach((/** @type {any} */ s, /** @type {number} */ i) => {
      if (i > 0 && s.model === model) plot.setSeries(i, { show });
    });
  }
}

/** @param {Stats} stats */
function renderCharts(stats) {
  const uPlot = /** @type {any} */ (globalThis).uPlot;
  if (!uPlot) {
    say(els.banner, 'The charting library did not load (/static/vendor/uplot/).');
    return;
  }
  renderLegend(stats);
  const xs = stats.buckets.map((b) => Date.parse(b) / 1000);
  const theme = `${cssVar('--text')}${cssVar('--surface')}`;
  for (const def of CHARTS) {
    const figure = /** @type {HTMLElement} */ (document.getElementById(def.id));
    const box = $('.chart', figure);
    const series = stats.models.flatMap((m) => def.metrics.map((metric) => m.series[metric]));
    // For tests and curious operators: how much this chart shows.
    figure.dataset.series = String(series.length);
    figure.dataset.points = String(series.flat().filter((v) => v !== null && v !== 0).length);
    if (!stats.models.length) {
      dropChart(def.id);
      box.replaceChildren(h('p', 'chart-empty', 'No requests in this period'));
      continue;
    }
    const data = [xs, ...series];
    const signature = `${stats.bucket}|${theme}|${stats.models.map((m) => m.model).join('\n')}`;
    const existing = charts.get(def.id);
    if (existing && existing.signature === signature) {
      existing.plot.setData(data);
      continue;
    }
    dropChart(def.id);
    box.replaceChildren();
    const plot = new uPlot(chartOptions(uPlot, def, stats, box), data, box);
    const observer = new ResizeObserver(() => {
      const width = box.clientWidth;
      if (width && Math.abs(width - plot.width) > 1)
        plot.setSize({ width, height: chartHeight(box) });
    });
    observer.observe(box);
    charts.set(def.id, { plot, signature, observer });
  }
}

/**
 * A tooltip for the bucket under the pointer: its time and every shown series' value.
 * @param {ChartDef} def
 * @param {(ts: number) => string} when
 */
function tooltip(def, when) {
  const tip = h('div', 'chart-tip');
  tip.hidden = true;
  return {
    hooks: {
      init: [
        (/** @type {any} */ u) => {
          u.over.append(tip);
          u.over.addEventListener('mouseenter', () => (hovered = u));
          u.over.addEventListener('mouseleave', () => {
            if (hovered === u) hovered = null;
            tip.hidden = true;
          });
        },
      ],
      setCursor: [
        (/** @type {any} */ u) => {
          const i = u.cursor.idx;
          if (hovered !== u || i === null || i === undefined) {
            tip.hidden = true;
            return;
          }
          const rows = [];
          for (let s = 1; s < u.series.length; s++) {
            const series = u.series[s];
            const value = u.data[s][i];
            if (!series.show || value === null || value === undefined) continue;
            const swatch = h('span', `swatch${series.dash ? ' dashed' : ''}`);
            swatch.style.background = series.dash ? 'transparent' : series.color; // CSSOM
            swatch.style.borderColor = series.color;
            rows.push(
              h(
                'div',
                'tip-row',
                swatch,
                h('span', 'tip-label', series.label),
                h('b', '', def.format(value)),
              ),
            );
          }
          if (!rows.length) rows.push(h('div', 'tip-row muted', 'no requests'));
          tip.replaceChildren(h('div', 'tip-time', when(u.data[0][i])), ...rows);
          tip.hidden = false;
          const width = u.over.clientWidth;
          const x = u.cursor.left;
          const left =
            x + 14 + tip.offsetWidth > width ? Math.max(0, x - 14 - tip.offsetWidth) : x + 14;
          tip.style.left = `${left}px`; // CSSOM: allowed by the CSP
          tip.style.top = `${Math.max(0, Math.min(u.cursor.top - tip.offsetHeight / 2, u.over.clientHeight - tip.offsetHeight))}px`;
        },
      ],
    },
  };
}

/**
 * @param {any} uPlot
 * @param {ChartDef} def
 * @param {Stats} stats
 * @param {HTMLElement} box
 */
function chartOptions(uPlot, def, stats, box) {
  const muted = cssVar('--muted');
  const grid = cssVar('--border');
  const font = `11px ${cssVar('--font') || 'system-ui, sans-serif'}`;
  const utc = stats.bucket === 'day';
  const axis = {
    stroke: muted,
    font,
    grid: { stroke: grid, width: 1 },
    ticks: { stroke: grid, width: 1, size: 4 },
  };
  /** @param {number} ts */
  const when = (ts) => {
    const d = new Date(ts * 1000);
    if (utc) {
      return d.toLocaleDateString(undefined, {
        timeZone: 'UTC',
        weekday: 'short',
        month: 'short',
        day: 'numeric',
      });
    }
    const end = new Date(d.getTime() + 3_600_000);
    const time = (/** @type {Date} */ t) =>
      t.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
    return `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })}, ${time(d)}–${time(end)}`;
  };
  /** @type {any[]} */
  const series = [{}];
  stats.models.forEach((m, i) => {
    def.metrics.forEach((metric, j) => {
      const p95 = metric.endsWith('p95_ms');
      series.push({
        label: def.metrics.length > 1 ? `${m.model} ${p95 ? 'p95' : 'p50'}` : m.model,
        model: m.model,
        color: color(i),
        show: !hiddenModels.has(m.model),
        stroke: color(i),
        width: p95 ? 1.25 : 2,
        dash: p95 ? [5, 4] : undefined,
        fill: def.fill && j === 0 && stats.models.length <= 4 ? tint(color(i), 0.07) : undefined,
        spanGaps: false,
        points: { size: 5, fill: color(i), width: 0 },
      });
    });
  });
  return {
    width: box.clientWidth || 480,
    height: chartHeight(box),
    tzDate: utc
      ? (/** @type {number} */ ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC')
      : undefined,
    cursor: { sync: { key: 'tokenrelay-admin' }, points: { size: 7 }, y: false },
    legend: { show: false },
    plugins: [tooltip(def, when)],
    scales: {
      y: {
        range: (/** @type {any} */ u, /** @type {number} */ min, /** @type {number} */ max) => {
          const top = def.rate ? Math.min(1, Math.max(0.05, max * 1.15)) : max > 0 ? max * 1.15 : 1;
          return [0, top];
        },
      },
    },
    axes: [
      { ...axis, space: 64 },
      {
        ...axis,
        size: 58,
        incrs: def.counts ? COUNT_STEPS : undefined,
        values: (/** @type {any} */ u, /** @type {number[]} */ splits) =>
          splits.map((v) => def.format(v)),
      },
    ],
    series,
  };
}

// ---- keys -------------------------------------------------------------------------------

function renderKeys() {
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

  const limits = [
    key.rpm !== null ? `${count(key.rpm)} rpm` : '',
    key.tpm !== null ? `${count(key.tpm)} tpm` : '',
    key.max_concurrent !== null ? `${key.max_concurrent} concurrent` : '',
  ].filter(Boolean);

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
function confirmed(button, label) {
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
function showSecret(name, secret) {
  els.secretName.textContent = name;
  els.secretValue.textContent = secret;
  els.secretCopy.textContent = 'Copy';
  els.secretBox.hidden = false;
  els.secretBox.scrollIntoView({ block: 'nearest' });
}

function hideSecret() {
  els.secretValue.textContent = '';
  els.secretName.textContent = '';
  els.secretBox.hidden = true;
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

/** @param {boolean} open */
function toggleCreate(open) {
  els.createForm.hidden = !open;
  els.newKey.setAttribute('aria-expanded', String(open));
  if (open) /** @type {HTMLInputElement} */ ($('#f-name')).focus();
}

/**
 * An expiry as the API wants it: like ``tokenrelay keys create --expires``, a date
 * (UTC midnight), a time with its zone, or from now: 30d, 12h.
 * @param {string} text
 */
function expiry(text) {
  const relative = /^(\d{1,4})([dh])$/.exec(text);
  if (relative) {
    const hours = Number(relative[1]) * (relative[2] === 'd' ? 24 : 1);
    return new Date(Date.now() + hours * 3_600_000).toISOString();
  }
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) return `${text}T00:00:00Z`;
  return text;
}

class FieldError extends Error {
  /**
   * @param {string} param
   * @param {string} message
   */
  constructor(param, message) {
    super(message);
    this.param = param;
  }
}

function createBody() {
  const form = new FormData(els.createForm);
  const text = (/** @type {string} */ name) => String(form.get(name) ?? '').trim();
  /** @type {Record<string, unknown>} */
  const body = { name: text('name') };
  if (!body.name) throw new FieldError('name', 'A key needs a name.');
  const models = text('models')
    .split(/[\s,]+/)
    .filter(Boolean);
  if (models.length) body.models = models;
  for (const [name, label] of [
    ['rpm', 'Requests / min'],
    ['tpm', 'Tokens / min'],
    ['max_concurrent', 'Concurrent'],
  ]) {
    const value = text(name);
    if (!value) continue;
    if (!/^\d+$/.test(value) || Number(value) < 1) {
      throw new FieldError(name, `${label} must be a whole number of at least 1.`);
    }
    body[name] = Number(value);
  }
  const budgetText = text('budget_usd').replace(/^\$/, '');
  if (budgetText) {
    const usd = Number(budgetText);
    if (!Number.isFinite(usd) || usd < 0)
      throw new FieldError('budget_usd', 'The budget is an amount in USD, like 25 or 7.50.');
    body.budget_usd = usd;
  }
  body.budget_period = text('budget_period') || 'monthly';
  const expires = text('expires_at');
  if (expires) body.expires_at = expiry(expires);
  return body;
}

/** @param {string | null} param */
function markField(param) {
  for (const input of els.createForm.querySelectorAll('[aria-invalid]'))
    input.removeAttribute('aria-invalid');
  if (!param) return;
  const field = els.createForm.querySelector(`[name="${CSS.escape(param)}"]`);
  if (field instanceof HTMLElement) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

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
  const redraw = () => state.stats && renderStats();
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
