"""The admin API: behaviour through httpx's ASGI transport, and conformance to its own
OpenAPI document through schemathesis against a live server (bad input: 4xx, never 5xx)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from support.net import free_port, wait_listening

from tokenrelay.server.admin import AdminAPI
from tokenrelay.server.admin_schema import openapi_document, parse_time
from tokenrelay.server.admin_stats import merge_openapi
from tokenrelay.store import KeySpec, Store, UsageRow

MASTER = "master-key-for-tests"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{tmp_path / 'admin.db'}")
    yield opened
    await opened.close()


def client_for(api: AdminAPI) -> httpx.AsyncClient:
    app = Starlette(routes=api.routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_key_life_cycle_over_http(store: Store) -> None:
    changes: list[int] = []
    async with client_for(AdminAPI(store, MASTER, on_change=lambda: changes.append(1))) as http:
        created = await http.post(
            "/admin/keys",
            json={
                "name": "ci",
                "models": ["openai/*"],
                "rpm": 5,
                "budget_usd": 10,
                "budget_period": "daily",
                "expires_at": "2030-01-01T00:00:00+02:00",
            },
            headers=AUTH,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        secret, key = body["secret"], body["key"]
        assert secret.startswith("sk-") and key["prefix"] == f"{secret[:7]}…{secret[-4:]}"
        assert key["expires_at"] == "2029-12-31T22:00:00Z" and key["status"] == "active"
        assert (await store.find_key(secret)) is not None

        listed = await http.get("/admin/keys", headers={"x-api-key": MASTER})
        assert listed.status_code == 200 and secret not in listed.text
        assert [k["id"] for k in listed.json()["data"]] == [key["id"]]

        rotated = await http.post(f"/admin/keys/{key['id']}/rotate", headers=AUTH)
        assert rotated.status_code == 200 and rotated.json()["secret"] != secret
        assert await store.find_key(secret) is None
        revoked = await http.post(f"/admin/keys/{key['id']}/revoke", headers=AUTH)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert changes == [1, 1]
        again = await http.post(f"/admin/keys/{key['id']}/rotate", headers=AUTH)
        assert again.status_code == 409 and again.json()["error"]["code"] == "key_revoked"
        assert (await http.get("/admin/keys", headers=AUTH)).json()["data"] == []
        everything = await http.get("/admin/keys?include_revoked=true", headers=AUTH)
        assert len(everything.json()["data"]) == 1
        for path in ("/admin/keys/key_nope/revoke", "/admin/keys/key_nope/rotate"):
            missing = await http.post(path, headers=AUTH)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"


async def test_usage_report_over_http(store: Store) -> None:
    key = (await http_create(store, "team"))["key"]
    now = datetime.now(UTC).replace(tzinfo=None)
    await store.insert_usage(
        [
            UsageRow(
                request_id="a",
                model="openai/gpt-4o",
                key_id=key["id"],
                cost_usd=0.25,
                input_tokens=10,
                created_at=now - timedelta(days=3),
            ),
            UsageRow(request_id="b", model="local/echo", key_id=key["id"], created_at=now),
        ]
    )
    async with client_for(AdminAPI(store, MASTER)) as http:
        by_key = (await http.get("/admin/usage", headers=AUTH)).json()
        assert by_key["by"] == "key" and by_key["since"] is None
        [row] = by_key["data"]
        assert (row["group"], row["name"], row["requests"]) == (key["id"], "team", 2)
        assert row["cost_usd"] == 0.25 and row["unpriced"] == 1
        recent = (await http.get("/admin/usage?by=model&since=1d", headers=AUTH)).json()
        assert [r["group"] for r in recent["data"]] == ["local/echo"]
        day = now.date().isoformat()
        by_day = (await http.get(f"/admin/usage?by=day&since={day}", headers=AUTH)).json()
        assert [r["group"] for r in by_day["data"]] == [day]
        for query in ("by=week", "since=yesterday", "since=2026-02-30", "since=2026-01-01T10:00"):
            bad = await http.get(f"/admin/usage?{query}", headers=AUTH)
            assert bad.status_code == 400, query
            assert bad.json()["error"]["param"] in ("by", "since")


async def http_create(store: Store, name: str) -> dict[str, Any]:
    async with client_for(AdminAPI(store, MASTER)) as http:
        response = await http.post("/admin/keys", json={"name": name}, headers=AUTH)
        assert response.status_code == 201
        return dict(response.json())


async def test_bad_input_gets_a_clear_400(store: Store) -> None:
    async with client_for(AdminAPI(store, MASTER)) as http:
        for body, param in [
            ({"name": ""}, "name"),
            ({"name": "   "}, "name"),
            ({"name": "a", "rpm": 0}, "rpm"),
            ({"name": "a", "rpm": "5"}, "rpm"),
            ({"name": "a", "budget_period": "weekly"}, "budget_period"),
            ({"name": "a", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no zone
            ({"name": "a", "surprise": 1}, None),
            ({}, None),
            ([], None),
        ]:
            response = await http.post("/admin/keys", json=body, headers=AUTH)
            assert response.status_code == 400, (body, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
            if param is not None:
                assert error["param"] == param, (body, error)
        for raw in (b"", b"{", b"\xff\xfe"):
            response = await http.post("/admin/keys", content=raw, headers=AUTH)
            assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
        flag = await http.get("/admin/keys?include_revoked=yes", headers=AUTH)
        assert flag.status_code == 400


async def test_limits_of_the_surface(store: Store) -> None:
    async with client_for(AdminAPI(store, MASTER, max_body=100)) as http:
        big = await http.post("/admin/keys", json={"name": "x" * 200}, headers=AUTH)
        assert big.status_code == 413
        wrong = await http.put("/admin/keys", headers=AUTH)
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, POST"
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        nowhere = await http.get("/admin/nothing/here", headers=AUTH)
        assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
        document = await http.get("/admin/openapi.json")  # public, no key
        assert document.status_code == 200 and document.json() == json.loads(
            json.dumps(merge_openapi(openapi_document()))
        )


async def test_only_the_master_key_gets_in(store: Store) -> None:
    virtual = (await http_create(store, "not-admin"))["secret"]
    async with client_for(AdminAPI(store, MASTER)) as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"x-api-key": virtual},
            {"Authorization": f"Basic {MASTER}"},
        ):
            response = await http.get("/admin/keys", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"
    async with client_for(AdminAPI(store, None)) as http:
        disabled = await http.get("/admin/keys", headers=AUTH)
        assert disabled.status_code == 403 and disabled.json()["error"]["code"] == "admin_disabled"
    async with client_for(AdminAPI(None, MASTER)) as http:
        assert (await http.get("/admin/usage", headers=AUTH)).status_code == 503


def test_parse_time() -> None:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert parse_time("7d", now) == datetime(2026, 11, 14, 12)
    assert parse_time("24h", now, ahead=True) == datetime(2026, 11, 22, 12)
    assert parse_time("2026-11-01") == datetime(2026, 11, 1)
    assert parse_time("2026-11-01T10:00:00+02:00") == datetime(2026, 11, 1, 8)
    assert parse_time("2026-11-01t10:00:00.1234567z") == datetime(2026, 11, 1, 10, 0, 0, 123456)
    assert parse_time(None) is None
    for bad in ("7w", "2026-11-01T10:00", "2026-13-01", "soon", "2026-11-01T10Z"):
        with pytest.raises(ValueError):
            parse_time(bad)


# --- schemathesis against a live server -----------------------------------------------


@pytest.fixture(scope="module")
def live_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = tmp_path_factory.mktemp("admin-live") / "admin.db"
    api = AdminAPI(None, MASTER)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        api.store = await Store.open(f"sqlite:///{database}")
        await api.store.create_key(KeySpec(name="seed"))
        yield
        await api.store.close()

    port = free_port()
    app = Starlette(routes=api.routes, lifespan=lifespan)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_listening(port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@SCHEMA.auth()
class MasterKeyAuth:
    """The master key on every case, except where schemathesis negates the security
    parameter on purpose (then the API must answer 401)."""

    def get(self, case: Any, context: Any) -> str:
        return MASTER

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_admin_api_conforms_to_its_openapi_document(
    operation: Any, mode: schemathesis.GenerationMode, live_admin: str
) -> None:
    """Every built-in schemathesis check (server errors, status codes, content types,
    response schemas, negative data rejected, positive data accepted, 405s, auth) on
    valid and invalid requests. (Driven by hand: schemathesis' pytest plugin does not
    run on pytest 9.)"""

    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        statuses.append(case.call_and_validate(base_url=live_admin).status_code)

    check()
    if mode is schemathesis.GenerationMode.POSITIVE:  # valid requests did get past auth
        assert 401 not in statuses and statuses, statuses
