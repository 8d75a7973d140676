// @ts-check
// The public status page: reads /status.json (no key) and draws each model's uptime
// bar (one cell per UTC day), its uptime per window and its latency. Text only is put
// into the page (textContent), never markup from the data.

/**
 * @typedef {{requests: Record<string, number>, failures: Record<string, number>,
 *   uptime: Record<string, number | null>, ttft_p50_ms: number | null,
 *   ttft_p95_ms: number | null, tokens_per_second: number | null,
 *   errors: Record<string, number>, bars: (number | null)[]}} Figures
 * @typedef {{name: string, state: string, figures: Figures | null}} DeploymentStatus
 * @typedef {{model: string, figures: Figures | null, deployments: DeploymentStatus[]}} ModelStatus
 * @typedef {{generated_at: string, windows: string[], bar_days: string[], models: ModelStatus[]}} StatusReport
 */

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @param {number | null | undefined} value */
export function percent(value) {
  return value === null || value === undefined ? '—' : `${value.toFixed(value === 100 ? 0 : 1)}%`;
}

/** @param {number | null | undefined} ms */
function seconds(ms) {
  return ms === null || ms === undefined ? '—' : `${(ms / 1000).toFixed(2)} s`;
}

/** @param {number | null} value */
function grade(value) {
  if (value === null) return '';
  return value >= 99 ? 'good' : value >= 95 ? 'fair' : 'poor';
}

/**
 * @param {HTMLElement} parent
 * @param {string} label
 * @param {string} value
 */
function figure(parent, label, value) {
  const span = el('span', 'status-figure', `${label} `);
  span.append(el('b', '', value));
  parent.append(span);
}

/**
 * @param {ModelStatus} entry
 * @param {StatusReport} report
 */
function card(entry, report) {
  const item = el('li', 'status-model');
  item.dataset.model = entry.model;
  const head = el('div', 'status-head');
  head.append(el('span', 'status-name', entry.model));
  const f = entry.figures;
  const up = el('span', 'status-uptime');
  for (const w of report.windows) {
    up.append(`${w} `);
    const b = el('b', '', percent(f ? f.uptime[w] : null));
    b.dataset.window = w;
    up.append(b, '  ');
  }
  head.append(up);
  item.append(head);
  const bars = el('div', 'status-bars');
  bars.setAttribute('role', 'img');
  bars.setAttribute('aria-label', `Daily uptime of ${entry.model}, last ${report.bar_days.length} days`);
  report.bar_days.forEach((day, i) => {
    const value = f ? f.bars[i] ?? null : null;
    const bar = el('span', `status-bar ${grade(value)}`);
    bar.title = `${day}: ${value === null ? 'no traffic' : percent(value)}`;
    bars.append(bar);
  });
  item.append(bars);
  const figures = el('div', 'status-figures');
  figure(figures, 'TTFT p50', seconds(f?.ttft_p50_ms));
  figure(figures, 'p95', seconds(f?.ttft_p95_ms));
  figure(figures, 'speed', f?.tokens_per_second ? `${f.tokens_per_second} tok/s` : '—');
  figure(figures, 'requests 24h', String(f ? f.requests['24h'] : 0));
  const errors = f ? Object.entries(f.errors) : [];
  if (errors.length) figure(figures, 'errors', errors.map(([k, n]) => `${k} ${n}`).join(', '));
  item.append(figures);
  const list = el('ul', 'status-deployments');
  for (const d of entry.deployments) {
    const li = el('li');
    li.append(el('span', `status-state ${d.state}`, d.state === 'in' ? 'in' : 'out'));
    li.append(el('span', 'status-name', d.name));
    li.append(el('span', '', `24h ${percent(d.figures ? d.figures.uptime['24h'] : null)}`));
    list.append(li);
  }
  item.append(list);
  return item;
}

async function load() {
  const summary = /** @type {HTMLElement} */ (document.getElementById('summary'));
  const models = /** @type {HTMLElement} */ (document.getElementById('models'));
  let report;
  try {
    const response = await fetch('/status.json', { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    report = /** @type {StatusReport} */ (await response.json());
  } catch (error) {
    summary.textContent = `The status is unavailable (${error instanceof Error ? error.message : error}).`;
    return;
  }
  const out = report.models.filter((m) => m.deployments.length && m.deployments.every((d) => d.state === 'out'));
  summary.textContent = out.length
    ? `${out.length} of ${report.models.length} models degraded: every deployment is out.`
    : `All ${report.models.length} models are operational.`;
  models.replaceChildren(...report.models.map((m) => card(m, report)));
  document.body.dataset.loaded = 'true';
}

load();
setInterval(load, 30000);
