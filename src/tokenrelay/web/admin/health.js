// @ts-check
// The Deployments section: every listed model's deployments (from /status.json), in or
// out by the health rule, each with a "Test" button that sends one probe
// (POST /admin/deployments/test) and shows its status, time to first token and answer.

import { api, errorText } from './api.js';

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * @param {string} name
 * @param {HTMLElement} out
 * @param {HTMLButtonElement} button
 */
async function test(name, out, button) {
  button.disabled = true;
  out.textContent = 'Testing…';
  try {
    const r = await api('/admin/deployments/test', { method: 'POST', body: { deployment: name } });
    const ttft = r.ttft_ms === null ? '—' : `${Math.round(r.ttft_ms)} ms`;
    out.textContent = `${r.ok ? 'OK' : 'Failed'} · HTTP ${r.status} · TTFT ${ttft} · ${r.ok ? r.answer : r.error}`;
    out.className = `deployment-result ${r.ok ? 'ok' : 'bad'}`;
  } catch (err) {
    out.textContent = errorText(err);
    out.className = 'deployment-result bad';
  } finally {
    button.disabled = false;
  }
}

/** Draw the section (its list is rebuilt on every refresh). */
export async function renderDeployments() {
  const list = document.getElementById('deployments');
  if (!list) return;
  let report;
  try {
    const response = await fetch('/status.json', { cache: 'no-store' });
    if (!response.ok) return; // the status page is off: no list to show
    report = await response.json();
  } catch {
    return;
  }
  /** @type {Map<string, string>} */
  const seen = new Map();
  for (const m of report.models) for (const d of m.deployments) seen.set(d.name, d.state);
  const rows = [...seen].map(([name, stateName]) => {
    const li = el('li', 'deployment');
    li.dataset.deployment = name;
    li.append(el('span', `deployment-state ${stateName}`, stateName));
    li.append(el('code', 'deployment-name', name));
    const button = /** @type {HTMLButtonElement} */ (el('button', 'deployment-test button ghost small', 'Test'));
    button.type = 'button';
    const out = el('span', 'deployment-result');
    button.addEventListener('click', () => test(name, out, button));
    li.append(button, out);
    return li;
  });
  list.replaceChildren(...rows);
}
