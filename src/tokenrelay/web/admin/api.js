// @ts-check
// The admin API client: the master key (sessionStorage, this tab only), requests with
// it as a Bearer token, and errors as ``AdminError``.

/** @typedef {import('./types.js').ErrorBody} ErrorBody */

const KEY = 'tokenrelay.masterKey';

export class AdminError extends Error {
  /**
   * @param {number} status  0 when the gateway could not be reached
   * @param {ErrorBody} body
   */
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code ?? null;
    this.param = body.param ?? null;
  }
}

export function masterKey() {
  try {
    return sessionStorage.getItem(KEY) ?? '';
  } catch {
    return '';
  }
}

/** @param {string} key  an empty string forgets it */
export function setMasterKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: nothing is remembered */
  }
}

/**
 * @param {string} path
 * @param {{method?: string, body?: unknown}} [options]
 * @returns {Promise<any>}
 */
export async function api(path, options = {}) {
  /** @type {Record<string, string>} */
  const headers = { Authorization: `Bearer ${masterKey()}` };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: 'no-store',
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new AdminError(0, { message: `The gateway is unreachable (${why}).`, code: 'network' });
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    throw new AdminError(response.status, json?.error ?? { message: `HTTP ${response.status}` });
  }
  return json;
}

/** @param {unknown} err */
export function errorText(err) {
  if (err instanceof AdminError) {
    return err.status ? `${err.status} ${err.code ?? ''}: ${err.message}` : err.message;
  }
  return String(err);
}
