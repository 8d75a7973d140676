// @ts-check
// The new-key form: its fields read and checked into the admin API's request body, and
// the field a refusal names marked.
import { $, els } from './dom.js';
import { LIMITS } from './limits.js';

/** @param {boolean} open */
export function toggleCreate(open) {
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

export class FieldError extends Error {
  /**
   * @param {string} param
   * @param {string} message
   */
  constructor(param, message) {
    super(message);
    this.param = param;
  }
}

export function createBody() {
  const form = new FormData(els.createForm);
  const text = (/** @type {string} */ name) => String(form.get(name) ?? '').trim();
  /** @type {Record<string, unknown>} */
  const body = { name: text('name') };
  if (!body.name) throw new FieldError('name', 'A key needs a name.');
  const models = text('models')
    .split(/[\s,]+/)
    .filter(Boolean);
  if (models.length) body.models = models;
  for (const { name, label } of LIMITS) {
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
export function markField(param) {
  for (const input of els.createForm.querySelectorAll('[aria-invalid]'))
    input.removeAttribute('aria-invalid');
  if (!param) return;
  const field = els.createForm.querySelector(`[name="${CSS.escape(param)}"]`);
  if (field instanceof HTMLElement) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}
