// @ts-check
// The totals above the charts, and the charts' note.
import { renderCharts } from './charts.js';
import { els, setText } from './dom.js';
import { count, millis, money, percent } from './format.js';

/** @typedef {import('./types.js').Stats} Stats */

/** @param {Stats} stats */
export function renderStats(stats) {
  const t = stats.totals;
  setText('total-requests', count(t.requests));
  const n = stats.models.length;
  setText('total-models', n === 1 ? '1 model' : `${n} models`);
  setText('total-tokens', `${count(t.input_tokens)} / ${count(t.output_tokens)}`);
  setText('total-tokens-sub', `${count(t.input_tokens + t.output_tokens)} in all`);
  setText('total-cost', money(t.cost_usd));
  setText('total-cost-sub', t.requests ? `${money(t.cost_usd / t.requests)} per request` : '');
  setText('total-cache', t.cache_hit_rate === null ? '–' : percent(t.cache_hit_rate));
  setText('total-cache-sub', `${count(t.cached_tokens)} cached · saved ${money(t.cache_saved_usd)}`);
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
