// @ts-check
// The page's elements and the few helpers that build nodes: no HTML is ever parsed
// from data, every node is made with createElement and text goes in as text.

/**
 * @template {Element} [T=HTMLElement]
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {T}
 */
export const $ = (selector, root = document) => /** @type {T} */ (root.querySelector(selector));

export const els = {
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

/**
 * An element with a class and children (strings become text nodes).
 * @param {string} tag
 * @param {string} [className]
 * @param {...(Node | string | null)} children
 */
export function h(tag, className = '', ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const child of children) if (child !== null) el.append(child);
  return el;
}

/**
 * @param {HTMLElement} el
 * @param {string} [message]  none hides it
 */
export function say(el, message) {
  el.textContent = message ?? '';
  el.hidden = !message;
}

/**
 * @param {string} id
 * @param {string} text
 */
export function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}
