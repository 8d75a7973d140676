// @ts-check
// The charts: one uPlot per metric, a series per model, one shared legend that hides a
// model everywhere, and a tooltip on the chart under the pointer. uPlot is vendored
// under /static/vendor/uplot/ and loaded by a classic deferred script before the
// modules run.
import { $, els, h, say } from './dom.js';
import { count, millis, money, percent } from './format.js';

/** @typedef {import('./types.js').Stats} Stats */

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

export function destroyCharts() {
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
      const hit = m.totals.cache_hit_rate === null ? '' : `, cache hit ${percent(m.totals.cache_hit_rate)}`;
      button.title = `${m.model}: ${count(m.totals.requests)} requests, ${money(m.totals.cost_usd)}${hit}`;
      /** @type {HTMLElement} */ (button.firstChild).style.background = color(i); // CSSOM
      button.dataset.model = m.model;
      return button;
    }),
  );
  legend.hidden = stats.models.length === 0;
}

/** @param {string} model */
export function toggleModel(model) {
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
export function renderCharts(stats) {
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
