"""The ``tokenrelay`` command: ``serve``, ``chat``, ``models``, ``fake-upstream``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load
    from .logs import configure as configure_logging
    from .server.workers import default_workers, refusal, serve_workers

    try:
        config = load(args.config)
        if args.redis_url:
            config.redis_url = args.redis_url
        if args.database_url:
            config.database_url = args.database_url
    except ConfigError as exc:
        print(f"tokenrelay: bad configuration: {exc}", file=sys.stderr)
        return 2
    if config.master_key is None and not is_loopback(args.host) and not args.insecure_no_auth:
        print(
            f"tokenrelay: refusing to listen on {args.host} without a master key: anyone who "
            "can reach it could spend your upstream keys. Set master_key (or "
            "TOKENRELAY_MASTER_KEY), listen on 127.0.0.1, or pass --insecure-no-auth.",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level)
    workers = args.workers if args.workers is not None else default_workers(config)
    why = refusal(config, workers)
    if why is not None:
        print(f"tokenrelay: {why}", file=sys.stderr)
        return 2
    if workers > 1:
        return serve_workers(config, args.host, args.port, workers, args.log_level)
    from .server.app import create_app
    from .server.run import serve

    app = create_app(config, args.host)
    names = ", ".join(sorted(app.state.gateway.router.providers)) or "none"
    print(
        f"tokenrelay: serving on http://{args.host}:{args.port} (providers: {names})",
        file=sys.stderr,
    )
    serve(app, args.host, args.port, args.log_level, config.shutdown_drain)
    return 0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url",
        default=os.environ.get("TOKENRELAY_BASE_URL", DEFAULT_BASE_URL),
        help="the gateway's OpenAI-compatible base URL (default: %(default)s, or $TOKENRELAY_BASE_URL)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("TOKENRELAY_API_KEY"),
        help="key sent as a Bearer token (default: $TOKENRELAY_API_KEY)",
    )


def _chat(args: argparse.Namespace) -> int:
    from .chat_cli import run_chat

    return run_chat(args)


def _models(args: argparse.Namespace) -> int:
    from .chat_cli import run_models

    return run_models(args)


def _fake(argv: list[str]) -> int:
    from .fake.cli import main as fake_main

    return fake_main(argv)


def build_parser(with_store: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenrelay", description="An LLM API relay station.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--host",
        default=os.environ.get("TOKENRELAY_HOST", "127.0.0.1"),
        help="address to listen on (default: %(default)s, or $TOKENRELAY_HOST)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=os.environ.get("TOKENRELAY_PORT", "8000"),  # argparse applies type=int
        help="port to listen on (default: %(default)s, or $TOKENRELAY_PORT)",
    )
    serve.add_argument("--config", help="YAML configuration file (default: $TOKENRELAY_CONFIG)")
    serve.add_argument(
        "--redis-url",
        default=os.environ.get("TOKENRELAY_REDIS_URL"),
        help="Redis shared by replicas: streams resume on any of them (default: config, or $TOKENRELAY_REDIS_URL)",
    )
    serve.add_argument(
        "--database-url",
        help="keys and usage: sqlite:///path or postgresql://… (default: config, "
        "$TOKENRELAY_DATABASE_URL, or ./tokenrelay.db)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow open mode (no master key) on a non-loopback address",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=os.environ.get("TOKENRELAY_WORKERS"),  # argparse applies type=int
        help="processes serving the port (default: $TOKENRELAY_WORKERS, else one per core "
        "with redis_url, 1 without; more than 1 needs redis_url)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    chat = sub.add_parser(
        "chat",
        help="chat with a model, streaming the reply",
        description="Without a prompt: a session, one message per line of stdin (Ctrl-C "
        "stops a reply, Ctrl-D or /exit quits).",
    )
    chat.add_argument(
        "prompt", nargs="?", help="one message (read from stdin when '-'); none: a session"
    )
    chat.add_argument("-m", "--model", default="local/echo")
    chat.add_argument("-s", "--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--no-stream", action="store_true", help="ask for one non-streaming response")
    chat.add_argument("--json", action="store_true", help="print each event as a line of JSON")
    chat.add_argument(
        "--protocol", choices=["openai", "anthropic"], default="openai", help="the wire to speak"
    )
    _client_args(chat)
    chat.set_defaults(func=_chat)

    models = sub.add_parser("models", help="list the models the gateway serves")
    _client_args(models)
    models.set_defaults(func=_models)

    if with_store:
        from .keys_cli import add_subcommands  # imports the store (SQLAlchemy): only when used

        add_subcommands(sub)
        from .channels_cli import add_subcommands as add_channels

        add_channels(sub)
    else:
        sub.add_parser("keys", help="create, list, revoke and rotate API keys")
        sub.add_parser("channels", help="channels (providers) managed live")
        sub.add_parser("usage", help="usage and cost, by key, model or day")

    sub.add_parser(
        "fake-upstream", help="run the fake upstream used by tests and benchmarks", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fake-upstream"]:
        return _fake(argv[1:])
    with_store = not argv or argv[0] in ("keys", "usage", "channels", "-h", "--help")
    args = build_parser(with_store).parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
