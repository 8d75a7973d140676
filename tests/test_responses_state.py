"""Stored Responses state through real gateway processes and the official ``openai`` SDK:
a stored response is fetched, its input listed, deleted; ``previous_response_id``
continues it on any upstream (the history reaches the upstream in its own wire);
``store: false`` keeps nothing; the retention ends it; a key never sees another's; on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.services import shared_postgres

pytestmark = pytest.mark.timeout(90)

MASTER = "master-" + "s" * 32
PROVIDERS = ["fake", "fakeant", "fakegem", "fakeresp"]


@pytest.fixture(scope="module")
def oa(gateway: Gateway) -> Iterator[Any]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0) as c:
        yield c


def _text(response: Any) -> str:
    return "".join(
        part.text
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "output_text"
    )


def _sent_text(fake: FakeUpstream, model: str) -> str:
    """Everything the upstream got for ``model``, as JSON text (any wire)."""
    return json.dumps(fake.find(model)["body"])


@pytest.mark.parametrize("first", ["local", *PROVIDERS])
def test_a_stored_response_is_fetched_listed_and_continued_on_every_upstream(
    oa: Any, fake: FakeUpstream, first: str
) -> None:
    """Streamed on one upstream, the response is stored (``store`` defaults to true):
    ``retrieve`` gives the same final object, ``input_items`` its input; then it is
    continued on every upstream, whose request carries the first turn (input and
    answer) in front of the new input."""
    with oa.responses.stream(model=f"{first}/echo", input="alpha bravo charlie") as stream:
        done = stream.get_final_response()
    assert done.store is True
    kept = oa.responses.retrieve(done.id)
    assert kept.id == done.id and _text(kept) == _text(done) and kept.status == "completed"
    items = oa.responses.input_items.list(done.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "alpha bravo charlie"  # type: ignore[union-attr]
    for then in PROVIDERS:
        fake.clear()
        follow = oa.responses.create(
            model=f"{then}/echo", input="delta echo", previous_response_id=done.id
        )
        assert follow.previous_response_id == done.id
        sent = _sent_text(fake, "echo")
        assert "alpha bravo charlie" in sent and "delta echo" in sent
        assert _text(done).strip()[:10] in sent  # the first answer went back as history
        assert "previous_response_id" not in sent
        if then == "fakeresp":
            assert fake.find("echo")["body"]["store"] is False  # the upstream keeps nothing


def test_a_chain_carries_the_whole_history_and_lists_it(oa: Any, fake: FakeUpstream) -> None:
    one = oa.responses.create(model="local/echo", input="one")
    two = oa.responses.create(model="local/echo", input="two", previous_response_id=one.id)
    fake.clear()
    oa.responses.create(model="fakeresp/echo", input="three", previous_response_id=two.id)
    sent = fake.find("echo")["body"]["input"]
    texts = [json.dumps(i) for i in sent]
    assert [k for k, w in enumerate(("one", "two", "three")) if any(w in t for t in texts)] == [
        0,
        1,
        2,
    ]
    listed = oa.responses.input_items.list(two.id, order="asc")
    assert [i.type for i in listed.data] == ["message", "message", "message"]
    assert len({i.id for i in listed.data}) == 3
    page = oa.responses.input_items.list(two.id, limit=1)
    assert page.has_more is True and len(page.data) == 1


def test_store_false_keeps_nothing(oa: Any) -> None:
    response = oa.responses.create(model="local/echo", input="forget me", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        oa.responses.create(model="local/echo", input="x", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_delete_forgets_and_cancel_needs_background(oa: Any, gateway: Gateway) -> None:
    response = oa.responses.create(model="local/echo", input="short lived")
    cancel = httpx.post(f"{gateway.base_url}/responses/{response.id}/cancel", timeout=10)
    assert cancel.status_code == 400 and cancel.json()["error"]["type"] == "invalid_request_error"
    oa.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.input_items.list("resp_never")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def secured(request: pytest.FixtureRequest, workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    database_url = (
        shared_postgres().new_database()
        if request.param == "postgresql"
        else f"sqlite:///{workdir}/state-{time.monotonic_ns()}.db"
    )
    config = gateway_config(
        fake, master_key=MASTER, database_url=database_url, responses={"retention": "4s"}
    )
    gw = start_gateway(workdir, config)
    yield gw
    gw.proc.stop()


def _key(gw: Gateway) -> str:
    reply = httpx.post(
        f"{gw.url}/admin/keys",
        json={"name": "state"},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["secret"])


def test_never_across_keys_and_gone_after_the_retention(secured: Gateway) -> None:
    a = openai.OpenAI(base_url=secured.base_url, api_key=_key(secured), max_retries=0)
    b = openai.OpenAI(base_url=secured.base_url, api_key=_key(secured), max_retries=0)
    mine = a.responses.create(model="local/echo", input="secret words")
    time.sleep(0.5)  # written to the database, not only held in memory
    assert _text(a.responses.retrieve(mine.id)) == _text(mine)
    for attempt in (
        lambda: b.responses.retrieve(mine.id),
        lambda: b.responses.input_items.list(mine.id),
        lambda: b.responses.delete(mine.id),
        lambda: b.responses.create(model="local/echo", input="x", previous_response_id=mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert a.responses.retrieve(mine.id).id == mine.id  # b's delete did nothing
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            a.responses.retrieve(mine.id)
        except openai.NotFoundError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the response outlived its retention of 4 s by 30 s")
