// @ts-check
// Numbers, money, durations and times as the dashboard shows them.

const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat('en');

/** @param {number} n */
export function count(n) {
  return Math.abs(n) >= 10_000 ? compact.format(n) : whole.format(Math.round(n * 100) / 100);
}

/** @param {number} usd */
export function money(usd) {
  if (usd === 0) return '$0';
  if (Math.abs(usd) < 0.01) return `$${Number(usd.toPrecision(2))}`;
  if (Math.abs(usd) < 10_000) return `$${usd.toFixed(2)}`;
  return `$${compact.format(usd)}`;
}

/** @param {number} rate  0..1 */
export function percent(rate) {
  const p = rate * 100;
  return `${p !== 0 && p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

/** @param {number} ms */
export function millis(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** @param {string} iso */
export function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86_400)} d ago`;
}

/** @param {string} iso */
export function day(iso) {
  return iso.slice(0, 10);
}
