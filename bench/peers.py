"""The peers tokenrelay is compared with, installed on demand into bench/.peers/.

- LiteLLM proxy, pinned, in its own virtualenv (bench/.peers/litellm), run with one
  uvicorn worker (its default, and tokenrelay's one process), no database, no master
  key (auth off, like tokenrelay's bench config; LiteLLM needs
  ``dangerously_permit_weak_or_unset_master_key`` for that), the local model-cost map
  (no fetch at start-up), logging at ERROR.
- nginx from Debian (``apt-get install nginx-light``), one worker process, as a plain
  streaming reverse proxy: ``proxy_buffering off``, HTTP/1.1 and keep-alive to the
  upstream, access log off.

``python bench/peers.py`` installs both and prints their versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import BENCH, LOOPBACK, Server

PEERS = BENCH / ".peers"
LITELLM_PIN = "litellm[proxy]==1.106.2"
LITELLM_VENV = PEERS / "litellm"
NGINX_DIR = PEERS / "nginx"


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started; the report says why."""


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        cp = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailable(f"{' '.join(argv)}: {e}") from e
    if cp.returncode != 0:
        tail = (cp.stdout + cp.stderr)[-3000:]
        raise PeerUnavailable(f"{' '.join(argv)} exited {cp.returncode}:\n{tail}")
    return cp.stdout + cp.stderr


def _base_python() -> str:
    """The interpreter the project venv was made from (a venv inside a venv is fragile)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


# -- LiteLLM -------------------------------------------------------------------------


def litellm_bin() -> Path:
    return LITELLM_VENV / "bin" / "litellm"


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    try:
        out = _run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], 60
        )
    except PeerUnavailable:
        return None
    return out.strip().splitlines()[-1]


def ensure_litellm(install: bool = True) -> Path:
    want = LITELLM_PIN.split("==")[1]
    if litellm_bin().exists() and litellm_version() == want:
        return litellm_bin()
    if not install:
        raise PeerUnavailable(f"LiteLLM {want} is not installed in {LITELLM_VENV}")
    print(f"bench: installing {LITELLM_PIN} into {LITELLM_VENV} (a few minutes)", flush=True)
    PEERS.mkdir(parents=True, exist_ok=True)
    if not (LITELLM_VENV / "bin" / "python").exists():
        _run([_base_python(), "-m", "venv", str(LITELLM_VENV)], 300)
    pip = str(LITELLM_VENV / "bin" / "pip")
    _run([pip, "install", "--quiet", "--upgrade", "pip"], 600)
    _run([pip, "install", "--quiet", LITELLM_PIN], 1800)
    if litellm_version() != want:
        raise PeerUnavailable(f"LiteLLM install finished but version is {litellm_version()}")
    return litellm_bin()


def litellm_server(fake_port: int, port: int, models: list[str], run_dir: Path) -> Server:
    """LiteLLM proxy with one model_list entry per benchmark model, each an
    openai-compatible model on the fake upstream (``openai/<model>`` + api_base)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["model_list:"]
    for m in models:
        lines += [
            f'  - model_name: "{m}"',
            "    litellm_params:",
            f'      model: "openai/{m}"',
            f'      api_base: "http://{LOOPBACK}:{fake_port}/v1"',
            '      api_key: "sk-bench"',
        ]
    lines += [
        "litellm_settings:",
        "  set_verbose: false",
        "  json_logs: false",
        "  telemetry: false",
        "general_settings:",
        # tokenrelay's bench config has no API keys, so LiteLLM runs without auth too
        # (it refuses to start without a master key unless told this is deliberate).
        "  dangerously_permit_weak_or_unset_master_key: true",
    ]
    cfg = run_dir / "litellm.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "DATABASE_"))}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start-up
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # no .env loading
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
            "HOME": str(run_dir),
        }
    )
    argv = [
        str(litellm_bin()),
        "--config",
        str(cfg),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return Server("litellm", argv, port, env=env, cwd=run_dir)


# -- nginx ---------------------------------------------------------------------------


def nginx_bin() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def nginx_version() -> str | None:
    exe = nginx_bin()
    if exe is None:
        return None
    try:
        return _run([exe, "-v"], 30).strip().rsplit("/", 1)[-1]
    except PeerUnavailable:
        return None


def ensure_nginx(install: bool = True) -> str:
    exe = nginx_bin()
    if exe is not None:
        return exe
    if not install:
        raise PeerUnavailable("nginx is not installed (apt-get install nginx-light)")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PeerUnavailable("nginx is missing and apt-get cannot be run here (not root?)")
    print("bench: installing nginx-light with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], 600, env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"], 900, env)
    exe = nginx_bin()
    if exe is None:
        raise PeerUnavailable("apt-get install nginx-light finished but no nginx binary")
    return exe


def nginx_server(fake_port: int, port: int, run_dir: Path) -> Server:
    exe = ensure_nginx(install=False)
    d = run_dir / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""# generated by bench/peers.py
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
{user}pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 100000;
    upstream fake {{
        server {LOOPBACK}:{fake_port};
        keepalive 512;
        keepalive_requests 100000;
    }}
    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    argv = [exe, "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")]
    return Server("nginx", argv, port, cwd=d)


def main() -> int:
    failed = 0
    for name, ensure, version in (
        ("litellm", ensure_litellm, litellm_version),
        ("nginx", ensure_nginx, nginx_version),
    ):
        try:
            ensure()
            print(f"{name}: {version()}")
        except PeerUnavailable as e:
            failed += 1
            print(f"{name}: UNAVAILABLE: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
