"""The store on SQLite and on a real PostgreSQL: migrations, the key life cycle, model
allow-lists, authentication, and idempotent usage records and reports."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from support.services import shared_postgres, start_postgres

from tokenrelay.events import GatewayError, Usage
from tokenrelay.store import (
    Authenticator,
    KeyNotFound,
    KeyRevoked,
    KeySpec,
    SchemaError,
    Store,
    UsageRow,
    UsageWriter,
    WriterOptions,
    async_url,
    create_engine,
    migrate,
    model_allowed,
)
from tokenrelay.store.migrations import LATEST, MIGRATIONS
from tokenrelay.store.schema import api_keys, metadata
from tokenrelay.store.schema import usage as usage_table


async def database_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return await asyncio.to_thread(shared_postgres().new_database)


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await database_url(request.param, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await Store.open(url)
    yield opened
    await opened.close()


def test_urls_translate_to_async_drivers() -> None:
    assert async_url("postgresql://u:p@h:5/db") == "postgresql+asyncpg://u:p@h:5/db"
    assert async_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert async_url("sqlite:///./x.db") == "sqlite+aiosqlite:///./x.db"
    assert async_url("data/x.db") == "sqlite+aiosqlite:///data/x.db"
    assert async_url(None) == "sqlite+aiosqlite:///./tokenrelay.db"
    assert async_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    with pytest.raises(ValueError, match="mysql"):
        async_url("mysql://h/db")


async def test_migrations_are_idempotent_concurrent_and_match_the_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        # Three processes' worth of start-ups at once: one migrates, the others wait.
        every = [v for v, _, _ in MIGRATIONS]
        assert (
            await asyncio.gather(migrate(engine), migrate(engine), migrate(engine)) == [LATEST] * 3
        )
        assert await migrate(engine) == LATEST
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version FROM schema_version"))).all()
            assert [v[0] for v in versions] == every

            def shape(sync_conn: object) -> dict[str, object]:
                found = inspect(sync_conn)
                return {
                    table: {
                        c["name"]: (c["nullable"], type(c["type"]).__name__)
                        for c in found.get_columns(table)
                    }
                    for table in found.get_table_names()
                }

            migrated = await conn.run_sync(shape)
        for table in metadata.sorted_tables:
            columns = migrated[table.name]
            assert set(columns) == {c.name for c in table.columns}, table.name
            for column in table.columns:
                assert columns[column.name][0] == column.nullable, (table.name, column.name)
    finally:
        await engine.dispose()


async def test_a_newer_schema_is_refused(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO schema_version VALUES (99, 'future', :at)"),
                {"at": datetime(2030, 1, 1)},
            )
        with pytest.raises(SchemaError, match="99"):
            await migrate(engine)
    finally:
        await engine.dispose()


async def test_key_life_cycle(store: Store) -> None:
    created = await store.create_key(KeySpec(name="ci", models=["openai/*"], rpm=10))
    secret, key = created.secret, created.key
    assert secret.startswith("sk-") and len(secret) == 43
    assert key.prefix == f"{secret[:7]}…{secret[-4:]}"
    assert secret not in repr(created) and secret not in repr(key)
    # Only the hash is stored: no column holds the secret.
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()._mapping
    assert row["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in row.values())

    assert (await store.find_key(secret)) == key
    assert await store.find_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert [k.id for k in await store.list_keys()] == [key.id]
    assert await store.get_key(key.id) == key

    rotated = await store.rotate_key(key.id)
    assert rotated.key.id == key.id and rotated.secret != secret
    assert rotated.key.rpm == 10 and rotated.key.models == ["openai/*"]
    assert await store.find_key(secret) is None
    assert (await store.find_key(rotated.secret)) == rotated.key

    revoked = await store.revoke_key(key.id)
    assert revoked.status() == "revoked" and revoked.revoked_at is not None
    again = await store.revoke_key(key.id)
    assert again.revoked_at == revoked.revoked_at  # idempotent
    assert await store.list_keys() == []
    assert [k.id for k in await store.list_keys(include_revoked=True)] == [key.id]
    found = await store.find_key(rotated.secret)
    assert found is not None and found.status() == "revoked"
    with pytest.raises(KeyRevoked):
        await store.rotate_key(key.id)
    with pytest.raises(KeyNotFound):
        await store.revoke_key("key_0000000000000000")
    with pytest.raises(KeyNotFound):
        await store.rotate_key("key_0000000000000000")


async def test_new_keys_look_like_sk_keys_and_old_tr_keys_keep_working(store: Store) -> None:
    """Clients that check for ``sk-`` get it; keys made before (``tr-``) or with a
    configured prefix are all still accepted."""
    auth = Authenticator(store, "master-secret")
    fresh = await store.create_key(KeySpec(name="new"))
    assert fresh.secret.startswith("sk-") and fresh.key.prefix.startswith("sk-")
    store.key_prefix = "tr-"  # as the old default made them
    old = await store.create_key(KeySpec(name="old"))
    store.key_prefix = "acme_1-"
    custom = await store.create_key(KeySpec(name="custom"))
    assert old.secret.startswith("tr-") and custom.secret.startswith("acme_1-")
    assert custom.key.prefix == f"{custom.secret[:11]}…{custom.secret[-4:]}"
    for made in (fresh, old, custom):
        assert (await auth.authenticate({"authorization": f"Bearer {made.secret}"})).key == made.key
    with pytest.raises(ValueError, match="key_prefix"):
        await Store.open(str(store.engine.url.database), key_prefix="no prefix")


async def test_expiry(store: Store) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    key = (await store.create_key(KeySpec(name="temp", expires_at=soon))).key
    assert key.status() == "active"
    assert key.expires_at == soon.replace(tzinfo=None)  # stored as naive UTC
    assert key.status(now=soon.replace(tzinfo=None) + timedelta(seconds=1)) == "expired"


def test_key_spec_validation_names_the_field() -> None:
    for bad, field in [
        ({"name": "  "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a", "rpm": 0}, "rpm"),
        ({"name": "a", "tpm": -5}, "tpm"),
        ({"name": "a", "max_concurrent": 2**31}, "max_concurrent"),
        ({"name": "a", "budget_usd": -1.0}, "budget_usd"),
        ({"name": "a", "budget_usd": float("nan")}, "budget_usd"),
        ({"name": "a", "budget_period": "weekly"}, "budget_period"),
        ({"name": "a", "models": [""]}, "models"),
    ]:
        with pytest.raises(ValueError, match=f"^{field}:"):
            KeySpec(**bad)  # type: ignore[arg-type]


def test_model_allow_lists() -> None:
    assert model_allowed(None, "anything/at-all")
    assert not model_allowed([], "openai/gpt-4o")
    patterns = ["openai/*", "anthropic/claude-haiku-4-5", "*-mini"]
    assert model_allowed(patterns, "openai/gpt-4.1")
    assert model_allowed(patterns, "anthropic/claude-haiku-4-5")
    assert not model_allowed(patterns, "anthropic/claude-opus-4-1")
    assert model_allowed(patterns, "groq/some-mini")
    assert not model_allowed(patterns, "OPENAI/gpt-4.1")  # case-sensitive
    assert not model_allowed(["openai/gpt-4o"], "openai/gpt-4o-mini")  # exact unless a pattern


async def test_authenticator(store: Store) -> None:
    created = await store.create_key(KeySpec(name="app", models=["local/*"], tpm=1000))
    auth = Authenticator(store, "master-secret")
    bearer = await auth.authenticate({"authorization": f"Bearer {created.secret}"})
    header = await auth.authenticate({"x-api-key": created.secret})
    assert bearer.key == header.key == created.key
    assert bearer.owner == f"key:{created.key.id}"
    assert bearer.limits is not None and bearer.limits.tpm == 1000
    assert bearer.visible(["local/echo", "openai/gpt-4o"]) == ["local/echo"]
    bearer.check_model("local/echo")
    with pytest.raises(GatewayError) as denied:
        bearer.check_model("openai/gpt-4o")
    assert denied.value.status == 404 and denied.value.code == "model_not_found"

    master = await auth.authenticate({"authorization": "Bearer master-secret"})
    assert master.master and master.key is None and master.allows("openai/gpt-4o")

    for headers, code in [
        ({}, "missing_api_key"),
        ({"authorization": "Bearer tr-wrong"}, "invalid_api_key"),
        ({"authorization": "Basic " + created.secret}, "missing_api_key"),
        ({"x-api-key": "master-secret-not"}, "invalid_api_key"),
    ]:
        with pytest.raises(GatewayError) as failed:
            await auth.authenticate(headers)
        assert failed.value.status == 401 and failed.value.code == code
        assert failed.value.headers["WWW-Authenticate"] == "Bearer"

    await store.revoke_key(created.key.id)
    auth.invalidate()
    with pytest.raises(GatewayError) as revoked:
        await auth.authenticate({"x-api-key": created.secret})
    assert revoked.value.code == "key_revoked"


async def test_authenticator_cache_and_open_mode(store: Store) -> None:
    now = [0.0]
    created = await store.create_key(KeySpec(name="cached"))
    auth = Authenticator(store, None, cache_ttl=5.0, clock=lambda: now[0])
    assert auth.open_mode
    anonymous = await auth.authenticate({})
    assert anonymous.key is None and not anonymous.master and anonymous.owner == "open"
    assert (await auth.authenticate({"x-api-key": created.secret})).key == created.key
    await store.revoke_key(created.key.id)  # by "another process": the cache still holds it
    now[0] = 4.0
    assert (await auth.authenticate({"x-api-key": created.secret})).key is not None
    now[0] = 5.5  # the cached entry expired: the revocation is seen
    with pytest.raises(GatewayError, match="revoked"):
        await auth.authenticate({"x-api-key": created.secret})
    with pytest.raises(GatewayError, match="Invalid"):  # open mode still refuses a bad key
        await auth.authenticate({"x-api-key": "tr-" + "x" * 40})


async def test_usage_is_idempotent_and_reported(store: Store) -> None:
    key = (await store.create_key(KeySpec(name="team"))).key
    day = datetime(2026, 11, 20, 12)
    rows = [
        UsageRow.from_usage(
            f"req_{i}",
            "openai/gpt-4o" if i % 2 else "local/echo",
            Usage(input=100, output=20, cached=10, reasoning=5),
            key_id=key.id if i < 6 else None,
            cost_usd=0.5,
            outcome="ok" if i != 3 else "error",
            created_at=day + timedelta(days=i // 4),
        )
        for i in range(8)
    ]
    await store.insert_usage(rows)
    await store.insert_usage(rows[2:5] + rows[2:3])  # a retried batch, with a duplicate
    assert await store.count_usage() == (8, 8)

    by_key = await store.usage_report("key")
    assert [(r["group"], r["name"], r["requests"]) for r in by_key] == [
        (key.id, "team", 6),
        (None, None, 2),  # keyless (open mode) requests sort last
    ]
    team = next(r for r in by_key if r["group"] == key.id)
    assert team["input_tokens"] == 600 and team["cached_tokens"] == 60
    assert team["reasoning_tokens"] == 30 and team["errors"] == 1
    assert team["cost_usd"] == pytest.approx(3.0)
    by_model = {r["group"]: r["requests"] for r in await store.usage_report("model")}
    assert by_model == {"openai/gpt-4o": 4, "local/echo": 4}
    by_day = await store.usage_report("day")
    assert [(r["group"], r["requests"]) for r in by_day] == [("2026-11-20", 4), ("2026-11-21", 4)]
    since = await store.usage_report("day", since=datetime(2026, 11, 21))
    assert [r["group"] for r in since] == ["2026-11-21"]
    assert await store.spend_since(key.id, None) == pytest.approx(3.0)
    assert await store.spend_since(key.id, datetime(2026, 11, 21)) == pytest.approx(1.0)
    assert await store.spend_since("key_none", None) == 0.0
    with pytest.raises(ValueError, match="by"):
        await store.usage_report("week")


async def test_sqlite_usage_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    """Usage batches reach a SQLite file without SQLAlchemy (store/sqlite_rows.py): the
    stored values are the same as through SQLAlchemy, and read back the same."""
    rows = [
        UsageRow(request_id="a", model="m", estimated=True, created_at=datetime(2026, 11, 21, 12)),
        UsageRow(
            request_id="b",
            model="m",
            key_id="key_1",
            cost_usd=0.25,
            ttft_ms=1.5,
            finish_reason="stop",
            created_at=datetime(2026, 11, 21, 12, 0, 1, 123456),
        ),
    ]
    stored = []
    niceness: list[int] = []
    for name, direct in (("direct", True), ("sqlalchemy", False)):
        store = await Store.open(f"sqlite:///{tmp_path / name}.db")
        assert store._sqlite_rows is not None  # a SQLite file: the direct path
        if not direct:
            await store._sqlite_rows.close()
            store._sqlite_rows = None
        await store.insert_usage(rows + rows[:1])  # the duplicate is skipped
        if direct:
            niceness = [
                os.getpriority(os.PRIO_PROCESS, t.native_id or 0)
                for t in threading.enumerate()
                if t.name.startswith("tokenrelay-usage-sqlite")
            ]
        async with store.engine.connect() as conn:
            raw = await conn.exec_driver_sql("SELECT * FROM usage ORDER BY request_id")
            read = await conn.execute(select(usage_table).order_by(usage_table.c.request_id))
            stored.append([(tuple(r)[1:], tuple(s)[1:]) for r, s in zip(raw, read, strict=True)])
        await store.close()
    assert stored[0] == stored[1]  # every column but the row number
    if sys.platform == "linux":  # its thread ran below the event loop's priority
        assert niceness == [19]
    columns = [c.name for c in usage_table.columns][1:]
    read_back = [dict(zip(columns, typed, strict=True)) for _, typed in stored[0]]
    assert [r["created_at"] for r in read_back] == [row.created_at for row in rows]
    assert [r["estimated"] for r in read_back] == [True, False]
    assert read_back[1]["cost_usd"] == 0.25 and read_back[1]["key_id"] == "key_1"


# --- the usage writer -----------------------------------------------------------------


def rows(start: int, count: int) -> list[UsageRow]:
    return [
        UsageRow(request_id=f"w{i:06d}", model="m", cost_usd=0.001)
        for i in range(start, start + count)
    ]


async def test_writer_batches_and_flushes(store: Store, tmp_path: Path) -> None:
    options = WriterOptions(batch_size=50, flush_interval=0.05, spill_dir=str(tmp_path))
    writer = UsageWriter(store, options)
    await writer.start()
    for row in rows(0, 1234):
        writer.record(row)
    writer.record(rows(0, 1)[0])  # the same request recorded twice is stored once
    assert await writer.flush(10)
    assert await store.count_usage() == (1234, 1234)
    assert writer.stats.spilled == 0 and writer.stats.failures == 0
    assert await writer.close()


async def test_writer_keeps_batches_full_under_a_steady_trickle(tmp_path: Path) -> None:
    """Rows that arrive one by one while a batch is being inserted wait for the next
    full batch: a slow database does not turn the writer into one transaction per
    request."""
    store = await Store.open(f"sqlite:///{tmp_path / 'slow.db'}")
    insert = store.insert_usage

    async def slow_insert(batch: Sequence[UsageRow]) -> None:
        await asyncio.sleep(0.02)  # a database 20 ms away
        await insert(batch)

    store.insert_usage = slow_insert  # type: ignore[method-assign]
    options = WriterOptions(batch_size=50, flush_interval=60.0, spill_dir=str(tmp_path))
    writer = UsageWriter(store, options)
    await writer.start()
    await asyncio.sleep(0.05)  # its first pass: nothing queued yet
    for row in rows(0, 410):  # one row per millisecond, as requests end
        writer.record(row)
        await asyncio.sleep(0.001)
    deadline = time.monotonic() + 30  # far below the 60 s a partial batch waits
    while writer.stats.written < 400 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert writer.stats.written == 400  # the full batches went at once; the last 10 wait
    assert writer.stats.batches == 8  # every one full: no transaction per request
    assert await writer.flush(10)  # and a flush takes the partial one
    assert await store.count_usage() == (410, 410)
    assert writer.stats.batches == 9
    await writer.close()
    await store.close()


async def test_writer_spills_to_disk_and_the_next_writer_replays(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    """A database that cannot be reached: record() still returns at once, rows beyond
    the spool go to disk, close() spills the rest; a later writer on a working database
    replays everything exactly once."""
    down = Store(create_engine(f"postgresql://nobody@127.0.0.1:{unused_tcp_port}/none"))
    options = WriterOptions(
        batch_size=20,
        flush_interval=0.01,
        spool_max_rows=50,
        spill_dir=str(tmp_path / "spool"),
        retry_initial=0.01,
        retry_max=0.05,
    )
    writer = UsageWriter(down, options)
    await writer.start()
    started = time.perf_counter()
    for row in rows(0, 300):
        writer.record(row)
    assert time.perf_counter() - started < 2  # never waits for the database (a guard, not a figure)
    assert writer.queued == 50 and writer.stats.spilled == 250
    await asyncio.sleep(0.2)
    assert writer.stats.failures >= 2 and "Error" in (writer.stats.last_error or "")
    assert not await writer.close(timeout=0.2)
    assert writer.stats.spilled == 300 and writer.stats.dropped == 0
    writer.record(rows(300, 1)[0])  # a stream that ends after shutdown began: spilled too
    assert writer.stats.spilled == 301
    await down.close()
    assert sum(1 for _ in (tmp_path / "spool").glob("usage-spill-*.jsonl")) >= 1

    up = await Store.open(f"sqlite:///{tmp_path / 'up.db'}")
    await up.insert_usage(rows(0, 10))  # some rows already arrived before the outage
    replayer = UsageWriter(up, options)
    await replayer.start()
    assert await replayer.flush(10)
    assert await up.count_usage() == (301, 301)
    assert list((tmp_path / "spool").glob("*.jsonl")) == []
    await replayer.close()
    await up.close()


async def test_writer_survives_a_postgresql_outage_exactly_once(tmp_path: Path) -> None:
    """Stop a real PostgreSQL mid-load, keep recording, restart it: every row arrives,
    none twice, and recording never blocked."""
    server = await asyncio.to_thread(start_postgres)
    try:
        store = await Store.open(await asyncio.to_thread(server.new_database))
        options = WriterOptions(
            batch_size=100,
            flush_interval=0.05,
            spool_max_rows=400,
            spill_dir=str(tmp_path / "spool"),
            retry_initial=0.05,
            retry_max=0.3,
        )
        writer = UsageWriter(store, options)
        await writer.start()
        total, slowest = 3000, 0.0

        async def produce() -> None:
            nonlocal slowest
            for i in range(total):
                began = time.perf_counter()
                writer.record(UsageRow(request_id=f"pg{i:05d}", model="m", input_tokens=i))
                slowest = max(slowest, time.perf_counter() - began)
                if i % 50 == 49:
                    await asyncio.sleep(0.05)  # ~1000 rows/s for ~3 s

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.6)
        await asyncio.to_thread(server.stop, "fast")
        await asyncio.sleep(1.5)
        assert writer.stats.failures > 0
        await asyncio.to_thread(server.start)
        await producer
        assert await writer.flush(30), writer.stats
        assert await store.count_usage() == (total, total)
        assert writer.stats.spilled > 0  # the outage outgrew the in-memory spool
        # A guard against record() waiting on the database (whose reconnects take
        # seconds), not a speed figure: record() itself takes microseconds.
        assert slowest < 0.5, slowest
        await writer.close()
        await store.close()
    finally:
        await asyncio.to_thread(server.destroy)


async def test_a_key_store_outage_is_a_503_not_a_500() -> None:
    class Away:
        async def find_key(self, secret: str) -> None:
            raise OSError("connection refused")

    auth = Authenticator(Away(), "master-key")  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as info:
        await auth.authenticate({"authorization": "Bearer tr-" + "a" * 40})
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
    assert (await auth.authenticate({"authorization": "Bearer master-key"})).master
