"""``tokenrelay keys create|list|revoke|rotate`` and ``tokenrelay usage``: administration
straight on the database (``--database-url``, ``$TOKENRELAY_DATABASE_URL``, or the
SQLite file ``./tokenrelay.db``), no running gateway needed.

A revoke or rotate is also published to Redis (``--redis-url``,
``$TOKENRELAY_REDIS_URL``), so every gateway sharing it drops its cached key lookups at
once; without it, gateways apply the change within their ``auth_cache_ttl``.

A new or rotated secret is the only thing written to standard output (details go to
standard error), so ``KEY=$(tokenrelay keys create --name ci)`` captures just the key;
``--json`` prints everything as JSON instead. Exit status: 0 done, 1 no such key (or a
revoked key to rotate), 2 bad arguments or an unusable database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .limits import BUDGET_PERIODS
from .limits.fields import LIMIT_FIELDS, LIMIT_NAMES, LimitField
from .server.admin_schema import parse_time
from .store import (
    DEFAULT_URL,
    DRIVER_ERRORS,
    GROUPS,
    ApiKey,
    KeyNotFound,
    KeyRevoked,
    KeySpec,
    SchemaError,
    Store,
    redact,
)


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TOKENRELAY_DATABASE_URL") or DEFAULT_URL,
        help="sqlite:///path or postgresql://… (default: $TOKENRELAY_DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_subcommands(subparsers: Any) -> None:
    """Register ``keys`` and ``usage`` on the ``tokenrelay`` command's subparsers. Each
    sets ``func``: call ``args.func(args)`` for the exit status."""
    keys = subparsers.add_parser("keys", help="create, list, revoke and rotate API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="create a key; its secret is shown once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="allowed models, comma-separated (patterns: openai/*)")
    for limit in LIMIT_FIELDS:
        kind = _int if limit.whole else float
        metavar = limit.flag.lstrip("-").replace("-", "_").upper()  # as argparse would
        create.add_argument(
            limit.flag, dest=limit.name, metavar=metavar, type=kind, help=limit.help
        )
    create.add_argument("--budget-period", choices=BUDGET_PERIODS, default="monthly")
    create.add_argument("--expires", help="YYYY-MM-DD, an RFC 3339 time, or from now: 30d, 12h")
    _database_arg(create)
    create.set_defaults(func=_sync(_create))

    listing = actions.add_parser("list", help="list keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    _database_arg(listing)
    listing.set_defaults(func=_sync(_list))

    for name, func, help_text in (
        ("revoke", _revoke, "revoke a key at once"),
        ("rotate", _rotate, "give a key a new secret (the old one stops working)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("key_id")
        action.add_argument(
            "--redis-url",
            default=os.environ.get("TOKENRELAY_REDIS_URL"),
            help="tell the gateways sharing this Redis at once (default: $TOKENRELAY_REDIS_URL)",
        )
        _database_arg(action)
        action.set_defaults(func=_sync(func))

    usage = subparsers.add_parser("usage", help="usage and cost totals")
    usage.add_argument("--by", choices=GROUPS, default="key")
    usage.add_argument("--since", help="YYYY-MM-DD, an RFC 3339 time, or ago: 7d, 24h")
    _database_arg(usage)
    usage.set_defaults(func=_sync(_usage))


def _sync(
    command: Callable[[Store, argparse.Namespace], Awaitable[None]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            asyncio.run(_with_store(command, args))
        except _Exit as exc:
            print(f"tokenrelay: {exc}", file=sys.stderr)
            return exc.code
        return 0

    return run


async def _with_store(
    command: Callable[[Store, argparse.Namespace], Awaitable[None]], args: argparse.Namespace
) -> None:
    where = args.database_url
    try:
        prefix = os.environ.get("TOKENRELAY_KEY_PREFIX") or "sk-"
        store = await Store.open(where, key_prefix=prefix)
    except (SchemaError, ValueError) as exc:
        raise _Exit(2, f"cannot use the database: {exc}") from None
    except DRIVER_ERRORS as exc:
        raise _Exit(2, f"cannot open the database {redact(where)}: {exc}") from None
    try:
        await command(store, args)
    except DRIVER_ERRORS as exc:
        raise _Exit(2, f"database error on {redact(where)}: {exc}") from None
    finally:
        await store.close()


def _time(value: str | None, what: str, ahead: bool) -> Any:
    try:
        return parse_time(value, ahead=ahead)
    except ValueError:
        raise _Exit(2, f"{what}: expected YYYY-MM-DD, an RFC 3339 time, or like 30d") from None


async def _create(store: Store, args: argparse.Namespace) -> None:
    models = None
    if args.models is not None:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        spec = KeySpec(
            name=args.name,
            models=models,
            **{name: getattr(args, name) for name in LIMIT_NAMES},
            budget_period=args.budget_period,
            expires_at=_time(args.expires, "--expires", ahead=True),
        )
    except ValueError as exc:
        raise _Exit(2, str(exc)) from None
    created = await store.create_key(spec)
    _show_secret(args, created.key, created.secret, "Created")


def _show_secret(args: argparse.Namespace, key: ApiKey, secret: str, verb: str) -> None:
    if args.json:
        print(json.dumps({"key": key.to_dict(), "secret": secret}, indent=2))
        return
    print(f"{verb} key {key.id} ({key.name}). Its secret, shown only now:", file=sys.stderr)
    print(secret)


async def _list(store: Store, args: argparse.Namespace) -> None:
    keys = await store.list_keys(include_revoked=args.all)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return
    rows = [
        [
            k.id,
            k.name,
            k.prefix,
            k.status(),
            ",".join(k.models) if k.models is not None else "*",
            *(_limit(k, limit) for limit in LIMIT_FIELDS),
            k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "-",
            k.created_at.strftime("%Y-%m-%d %H:%M"),
        ]
        for k in keys
    ]
    head = ["ID", "NAME", "PREFIX", "STATUS", "MODELS", *(f.column for f in LIMIT_FIELDS)]
    _table([*head, "EXPIRES (UTC)", "CREATED (UTC)"], rows)


def _limit(key: ApiKey, limit: LimitField) -> str:
    value = getattr(key, limit.name)
    if limit.whole:
        return _opt(value)
    return f"${value:g}/{key.budget_period}" if value is not None else "-"


async def _revoke(store: Store, args: argparse.Namespace) -> None:
    try:
        key = await store.revoke_key(args.key_id)
    except KeyNotFound:
        raise _Exit(1, f"no key {args.key_id!r}") from None
    await _announce(args, key.id)
    if args.json:
        print(json.dumps(key.to_dict(), indent=2))
    else:
        print(f"Revoked {key.id} ({key.name}).")


async def _rotate(store: Store, args: argparse.Namespace) -> None:
    try:
        created = await store.rotate_key(args.key_id)
    except KeyNotFound:
        raise _Exit(1, f"no key {args.key_id!r}") from None
    except KeyRevoked:
        raise _Exit(1, f"the key {args.key_id!r} is revoked; create a new one") from None
    await _announce(args, created.key.id)
    _show_secret(args, created.key, created.secret, "Rotated")


async def _announce(args: argparse.Namespace, key_id: str) -> None:
    """Tell the gateways (through Redis) to drop their cached lookups now; the change
    is made either way, so a Redis that cannot be reached is only a warning."""
    later = "gateways apply it within their auth_cache_ttl"
    if not args.redis_url:
        print(f"(no --redis-url: {later})", file=sys.stderr)
        return
    from redis.exceptions import RedisError

    from .store.revocations import announce

    try:
        await announce(args.redis_url, key_id)
    except (RedisError, OSError) as exc:
        print(f"warning: Redis could not be told: {exc}; {later}", file=sys.stderr)


async def _usage(store: Store, args: argparse.Namespace) -> None:
    since = _time(args.since, "--since", ahead=False)
    rows = await store.usage_report(args.by, since)
    if args.json:
        print(json.dumps({"by": args.by, "since": _iso(since), "data": rows}, indent=2))
        return
    head = [args.by.upper(), *(["NAME"] if args.by == "key" else [])]
    head += ["REQUESTS", "INPUT", "OUTPUT", "CACHED", "REASONING", "COST USD"]
    head += ["CACHE HIT", "SAVED USD", "ERRORS", "EST."]
    table = []
    for r in rows:
        group = [r["group"] or "(no key)", *([r["name"] or "-"] if args.by == "key" else [])]
        numbers = [r[n] for n in ("requests", "input_tokens", "output_tokens", "cached_tokens")]
        numbers += [r["reasoning_tokens"]]
        table.append(
            [
                *group,
                *map(str, numbers),
                f"{r['cost_usd']:.6f}",
                f"{r['cache_hit_rate']:.1%}",
                f"{r['cache_saved_usd']:.6f}",
                str(r["errors"]),
                str(r["estimated"]),
            ]
        )
    _table(head, table)
    total = sum(r["cost_usd"] for r in rows)
    since_text = f" since {_iso(since)}" if since else ""
    print(f"{sum(r['requests'] for r in rows)} requests, ${total:.6f}{since_text}")


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _opt(value: int | None) -> str:
    return str(value) if value is not None else "-"


def _table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows, strict=False)]
    for line in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tokenrelay.keys_cli keys …`` / ``… usage …`` without the main CLI."""
    parser = argparse.ArgumentParser(prog="tokenrelay")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
