"""``tokenrelay fake-upstream``: run the fake upstream as its own process.

Prints ``fake upstream listening on http://HOST:PORT`` (flushed) once it accepts
connections, so a harness that passes ``--port 0`` can read the port; stops cleanly on
SIGINT/SIGTERM. Uses uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from .server import start

__all__ = ["DEFAULT_PORT", "build_parser", "main"]

DEFAULT_PORT = 8081


def build_parser(prog: str = "tokenrelay fake-upstream") -> argparse.ArgumentParser:
    """The command's arguments (exposed so a parent CLI can reuse them)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A fast fake LLM upstream (OpenAI, Anthropic and Gemini wire formats) "
        "whose behaviour is chosen by the model name: echo, gen/<n>, "
        "replay/<provider>/<stem>, with ?ttft=&gap=&drop_after=&... options.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--fixtures", type=Path, default=None, help="folder of recorded streams for replay/ models"
    )
    parser.add_argument(
        "--log-limit",
        type=int,
        default=10_000,
        help="requests kept in the /_fake/log log (default 10000; 0 keeps none)",
    )
    return parser


async def _serve(host: str, port: int, fixtures: Path | None, log_limit: int) -> None:
    upstream = await start(host, port, fixtures, log_limit=log_limit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on {upstream.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await upstream.close()


def main(argv: list[str] | None = None) -> int:
    """Run until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.fixtures is not None and not args.fixtures.is_dir():
        print(f"--fixtures {args.fixtures}: not a folder", file=sys.stderr)
        return 2
    coro = _serve(args.host, args.port, args.fixtures, args.log_limit)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0
