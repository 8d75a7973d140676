// @ts-check
// What the page holds between refreshes.

/** @typedef {import('./types.js').Key} Key */
/** @typedef {import('./types.js').Spend} Spend */
/** @typedef {import('./types.js').Stats} Stats */

export const PERIODS = /** @type {Record<string, string>} */ ({
  '24h': 'hour',
  '7d': 'hour',
  '30d': 'day',
  '90d': 'day',
});

export const state = {
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
