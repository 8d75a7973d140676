// @ts-check
// What the chat page and the demo page share: the API key, the model list, the theme
// toggle and the clipboard.
import { APIError } from './tokenrelay.js';

const KEY = 'tokenrelay.apiKey';
const THEME = 'tokenrelay.theme';

/** The API key of this tab (sessionStorage: gone when the tab closes). */
export function apiKey() {
  try {
    return sessionStorage.getItem(KEY) ?? '';
  } catch {
    return '';
  }
}

/** @param {string} key  an empty string forgets it */
export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the key lives for this page only */
  }
}

/**
 * The model ids the gateway serves, sorted with local ones last.
 * @param {string} [baseUrl]
 * @returns {Promise<string[]>}
 */
export async function fetchModels(baseUrl = '/v1') {
  const key = apiKey();
  const response = await fetch(`${baseUrl}/models`, {
    headers: key ? { Authorization: `Bearer ${key}` } : {},
  });
  if (!response.ok) {
    let body = {};
    try {
      body = (await response.json()).error ?? {};
    } catch {
      /* not JSON */
    }
    throw new APIError(response.status, body, response.headers.get('X-Request-Id'));
  }
  const json = await response.json();
  const ids = (Array.isArray(json?.data) ? json.data : [])
    .map((/** @type {{id?: unknown}} */ m) => m?.id)
    .filter((/** @type {unknown} */ id) => typeof id === 'string');
  return ids.sort((/** @type {string} */ a, /** @type {string} */ b) => {
    const la = a.startsWith('local/') ? 1 : 0;
    const lb = b.startsWith('local/') ? 1 : 0;
    return la - lb || a.localeCompare(b);
  });
}

/** Wire the theme toggle: switches between light and dark and remembers the choice. */
export function initTheme() {
  const root = document.documentElement;
  const media = window.matchMedia('(prefers-color-scheme: dark)');
  const current = () => root.dataset.theme || (media.matches ? 'dark' : 'light');
  const label = () => {
    const button = document.getElementById('theme-toggle');
    button?.setAttribute('aria-pressed', String(current() === 'dark'));
  };
  document.getElementById('theme-toggle')?.addEventListener('click', () => {
    const next = current() === 'dark' ? 'light' : 'dark';
    root.dataset.theme = next;
    try {
      localStorage.setItem(THEME, next);
    } catch {
      /* not remembered */
    }
    label();
  });
  media.addEventListener('change', label);
  label();
}

/**
 * Copy text to the clipboard; true when it worked.
 * @param {string} text
 * @returns {Promise<boolean>}
 */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Older browsers, or a page served over plain http from another host.
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}
