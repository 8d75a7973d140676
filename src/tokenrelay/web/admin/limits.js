// @ts-check
// A key's count limits as the page shows and asks for them: the page's copy of
// limits/fields.py's LIMIT_FIELDS (the budget, an amount with its period, has its own
// meter and fields). A new count limit is one entry here and one input in admin.html.

/**
 * @typedef {{name: 'rpm' | 'tpm' | 'max_concurrent', label: string,
 *   unit: string, compact: boolean}} LimitDef
 */

/** @type {LimitDef[]} */
export const LIMITS = [
  { name: 'rpm', label: 'Requests / min', unit: 'rpm', compact: true },
  { name: 'tpm', label: 'Tokens / min', unit: 'tpm', compact: true },
  { name: 'max_concurrent', label: 'Concurrent', unit: 'concurrent', compact: false },
];
