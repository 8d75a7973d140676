"""``tokenrelay channels list|create|edit|enable|disable|delete``: channels managed
straight on the database (``--database-url``,
``$TOKENRELAY_DATABASE_URL``), no running gateway needed. Upstream keys are encrypted
with ``$TOKENRELAY_SECRET_KEY`` (the gateways' own); they are read from ``--api-key``
(repeatable) or, safer than the command line, ``--api-keys-from-env VAR`` (comma-
separated); keys given to ``edit`` replace the channel's keys. A change is published to Redis (``--redis-url``, ``$TOKENRELAY_REDIS_URL``)
so every gateway applies it within a second; without it, within their poll interval.
Keys are only ever shown masked. Exit status: 0 done, 1 no such channel, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from .store import DEFAULT_URL, DRIVER_ERRORS, SchemaError, Store, redact
from .store.channels import Channel, ChannelExists, ChannelNotFound, ChannelSpec, ChannelStore
from .store.secrets import NoSecretKey, SecretBox


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", default=os.environ.get("TOKENRELAY_DATABASE_URL") or DEFAULT_URL
    )
    parser.add_argument("--redis-url", default=os.environ.get("TOKENRELAY_REDIS_URL"))
    parser.add_argument("--json", action="store_true", help="print JSON")


def _fields(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--base-url", required=required)
    parser.add_argument("--protocol")
    parser.add_argument("--models", help="comma-separated; '*' passes any name through")
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument(
        "--weight", type=float, help="its share of a model other channels serve too (1)"
    )
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="connect, first_token, idle or total (given ones replace the channel's)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="rpm or max_concurrent: what it may be sent (given ones replace the channel's)",
    )
    parser.add_argument("--api-key", action="append", default=[], help="an upstream key")
    parser.add_argument("--api-keys-from-env", metavar="VAR", help="keys, comma-separated")


def add_subcommands(subparsers: Any) -> None:
    channels = subparsers.add_parser("channels", help="channels (providers) managed live")
    actions = channels.add_subparsers(dest="channels_command", required=True)
    listing = actions.add_parser("list", help="list the database's channels")
    _common(listing)
    listing.set_defaults(func=_run(_list))
    create = actions.add_parser("create", help="create a channel")
    create.add_argument("name")
    _fields(create, True)
    _common(create)
    create.set_defaults(func=_run(_create))
    edit = actions.add_parser("edit", help="change a channel (keys given: they replace its keys)")
    edit.add_argument("name")
    edit.add_argument("--rename")
    _fields(edit, False)
    _common(edit)
    edit.set_defaults(func=_run(_edit))
    for name, enabled in (("enable", True), ("disable", False)):
        action = actions.add_parser(name, help=f"{name} a channel")
        action.add_argument("name")
        _common(action)
        action.set_defaults(func=_run(_toggle(enabled)))
    delete = actions.add_parser("delete", help="delete a channel and its keys")
    delete.add_argument("name")
    _common(delete)
    delete.set_defaults(func=_run(_delete))


Command = Any


def _run(command: Command) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            asyncio.run(_with_store(command, args))
        except _Exit as exc:
            print(f"tokenrelay: {exc}", file=sys.stderr)
            return exc.code
        return 0

    return run


async def _with_store(command: Command, args: argparse.Namespace) -> None:
    where = args.database_url
    try:
        store = await Store.open(where)
    except (SchemaError, ValueError) as exc:
        raise _Exit(2, f"cannot use the database: {exc}") from None
    except DRIVER_ERRORS as exc:
        raise _Exit(2, f"cannot open the database {redact(where)}: {exc}") from None
    channels = ChannelStore(store.engine, SecretBox.from_env())
    try:
        changed = await command(channels, args)
    except ChannelNotFound as exc:
        raise _Exit(1, f"no channel {exc}") from None
    except (ChannelExists, NoSecretKey, ValueError) as exc:
        raise _Exit(2, str(exc)) from None
    except DRIVER_ERRORS as exc:
        raise _Exit(2, f"database error on {redact(where)}: {exc}") from None
    finally:
        await store.close()
    if changed:
        await _announce(args)


async def _announce(args: argparse.Namespace) -> None:
    if not args.redis_url:
        print("(no --redis-url: gateways apply it at their next poll)", file=sys.stderr)
        return
    from redis.exceptions import RedisError

    from .server.channels import TOPIC
    from .store.revocations import announce

    try:
        await announce(args.redis_url, "*", TOPIC)
    except (RedisError, OSError) as exc:
        print(f"(could not tell the gateways through Redis: {exc})", file=sys.stderr)


def _show(channel: Channel, args: argparse.Namespace) -> None:
    s = channel.spec
    if args.json:
        out = {
            "id": channel.id,
            "name": s.name,
            "protocol": s.protocol,
            "base_url": s.base_url,
            "models": s.models,
            "weight": s.weight,
            "timeouts": s.timeouts,
            "limits": s.limits,
            "enabled": s.enabled,
            "keys": [{"id": k.id, "masked": "…" + k.last4} for k in channel.keys],
        }
        print(json.dumps(out))
        return
    state = "enabled" if s.enabled else "disabled"
    keys = ", ".join(f"{k.id} …{k.last4}" for k in channel.keys) or "no keys"
    weight = f"weight {s.weight:g}"
    print(f"{s.name}\t{s.protocol}\t{s.base_url}\t{','.join(s.models)}\t{weight}\t{state}\t{keys}")


def _changes(args: argparse.Namespace) -> tuple[dict[str, Any], list[str] | None]:
    changes: dict[str, Any] = {}
    if args.base_url:
        changes["base_url"] = args.base_url
    if args.protocol:
        changes["protocol"] = args.protocol
    if args.models:
        changes["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.header:
        headers = {}
        for item in args.header:
            name, sep, value = item.partition(":")
            if not sep:
                raise _Exit(2, f"--header {name!r}: expected 'Name: value'")
            headers[name.strip()] = value.strip()
        changes["headers"] = headers
    if args.weight is not None:
        changes["weight"] = args.weight
    if args.timeout:
        timeouts = {}
        for item in args.timeout:
            name, sep, value = item.partition("=")
            try:
                timeouts[name.strip()] = float(value)
            except ValueError:
                raise _Exit(2, f"--timeout {item!r}: expected NAME=SECONDS") from None
            if not sep:
                raise _Exit(2, f"--timeout {item!r}: expected NAME=SECONDS")
        changes["timeouts"] = timeouts
    if args.limit:
        limits = {}
        for item in args.limit:
            name, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise _Exit(2, f"--limit {item!r}: expected NAME=N")
            limits[name.strip()] = int(value)
        changes["limits"] = limits
    keys = list(args.api_key)
    if args.api_keys_from_env:
        found = os.environ.get(args.api_keys_from_env)
        if not found:
            raise _Exit(2, f"--api-keys-from-env: {args.api_keys_from_env} is not set")
        keys += [k.strip() for k in found.split(",") if k.strip()]
    return changes, (keys or None)


async def _list(store: ChannelStore, args: argparse.Namespace) -> bool:
    for channel in await store.all():
        _show(channel, args)
    return False


async def _create(store: ChannelStore, args: argparse.Namespace) -> bool:
    changes, keys = _changes(args)
    spec = ChannelSpec(name=args.name, **changes)
    _show(await store.create(spec, keys or []), args)
    return True


async def _edit(store: ChannelStore, args: argparse.Namespace) -> bool:
    changes, keys = _changes(args)
    if args.rename:
        changes["name"] = args.rename
    _show(await store.update(args.name, changes, keys), args)
    return True


def _toggle(enabled: bool) -> Command:
    async def toggle(store: ChannelStore, args: argparse.Namespace) -> bool:
        _show(await store.update(args.name, {"enabled": enabled}), args)
        return True

    return toggle


async def _delete(store: ChannelStore, args: argparse.Namespace) -> bool:
    await store.delete(args.name)
    print(f"deleted {args.name}", file=sys.stderr)
    return True
