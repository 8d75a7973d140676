// Shared by the node --test files: paths, the Python interpreter, skip-or-fail, and real
// gateway processes (the fake upstream and a gateway using it) on free loopback ports.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WEB = join(REPO, 'src', 'tokenrelay', 'web');
export const FIXTURES = resolve(REPO, '..', 'shared', 'fixtures', 'streams');
export const CI = process.env.CI === 'true';

/** The Python that runs tokenrelay: $TOKENRELAY_PYTHON, the repo's .venv, or python3. */
export function python() {
  if (process.env.TOKENRELAY_PYTHON) return process.env.TOKENRELAY_PYTHON;
  const venv = join(REPO, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/**
 * Skip a test with a reason, or fail it under CI=true (where nothing may be missing).
 * @param {import('node:test').TestContext} t
 * @param {string} reason
 */
export function skipOrFail(t, reason) {
  if (CI) throw new Error(`${reason} (a failure, not a skip, under CI=true)`);
  t.skip(reason);
}

/** Every recorded stream: [{name, path}], [] when ../shared is absent. */
export function fixtureFiles() {
  if (!existsSync(FIXTURES)) return [];
  const out = [];
  for (const dir of readdirSync(FIXTURES, { withFileTypes: true })) {
    if (!dir.isDirectory()) continue;
    for (const file of readdirSync(join(FIXTURES, dir.name)).sort()) {
      if (file.endsWith('.sse')) out.push({ name: `${dir.name}/${file}`, path: join(FIXTURES, dir.name, file) });
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Run Python code with JSON on stdin; returns the JSON it prints.
 * @param {string} code
 * @param {unknown} input
 */
export function runPython(code, input) {
  const r = spawnSync(python(), ['-c', code], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, PYTHONPATH: join(REPO, 'src') },
  });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A free loopback port. */
export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

/**
 * @param {string} url
 * @param {number} timeoutMs
 */
async function waitHealthy(url, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status < 500) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`nothing answered at ${url}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

/**
 * @param {string[]} args
 * @param {string} probe  a URL that answers once the process is ready
 */
async function startProcess(args, probe) {
  const child = spawn(python(), args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  try {
    await Promise.race([
      waitHealthy(probe, 20000),
      new Promise((_, fail) => child.once('exit', (code) => fail(new Error(`exited with ${code}`)))),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${args.join(' ')} did not start: ${err}\n${output}`);
  }
  return { child, output: () => output };
}

/**
 * A gateway to test against: $TOKENRELAY_TEST_GATEWAY when tests/test_web.py started one
 * (it has `local/echo` and the fake upstream as `fake/...`), else our own fake upstream
 * and gateway processes, stopped by `close()`.
 * @param {{rate?: number}} [options]  local/echo deltas per second (own gateway only)
 * @returns {Promise<{url: string, fake: boolean, close: () => Promise<void>}>}
 */
export async function gateway(options = {}) {
  if (process.env.TOKENRELAY_TEST_GATEWAY) {
    return { url: process.env.TOKENRELAY_TEST_GATEWAY.replace(/\/+$/, ''), fake: true, close: async () => {} };
  }
  const dir = mkdtempSync(join(tmpdir(), 'tokenrelay-js-'));
  const procs = [];
  const providers = [];
  if (existsSync(FIXTURES)) {
    const port = await freePort();
    const fakeArgs = ['-m', 'tokenrelay.cli', 'fake-upstream', '--port', String(port), '--fixtures', FIXTURES];
    procs.push(await startProcess(fakeArgs, `http://127.0.0.1:${port}/_fake/log`));
    providers.push({ name: 'fake', protocol: 'openai', base_url: `http://127.0.0.1:${port}/v1`, api_key: 'sk-fake', models: ['*'] });
  }
  const config = join(dir, 'gateway.json'); // JSON is YAML
  writeFileSync(config, JSON.stringify({ env_providers: false, local: { rate: options.rate ?? 100 }, providers, keepalive_interval: 0.2 }));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  procs.push(await startProcess(['-m', 'tokenrelay.cli', 'serve', '--port', String(port), '--config', config], `${url}/health`));
  return {
    url,
    fake: providers.length > 0,
    close: async () => {
      for (const { child } of procs.reverse()) {
        if (child.exitCode !== null) continue;
        const exited = new Promise((ok) => child.once('exit', ok));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((ok) => setTimeout(ok, 5000).unref())]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Collect a streamChat run.
 * @param {AsyncIterable<any>} events
 */
export async function collect(events) {
  const all = [];
  for await (const event of events) all.push(event);
  const text = all.filter((e) => e.type === 'text').map((e) => e.text).join('');
  return { events: all, text };
}
