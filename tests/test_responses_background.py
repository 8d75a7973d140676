"""Background mode of the Responses API, from the user's side: the official ``openai``
SDK (``responses.create(background=True)``, ``retrieve``, ``retrieve(stream=True,
starting_after=N)``, ``cancel``) against a real gateway process and the fake upstream,
on ``local/echo``, translated upstream protocols and a Responses upstream.

A background response runs whoever reads it: it is returned queued at once (or
streamed), polled to its end, resumed after a drop at any event with no gap and no
duplicate, cancelled (the upstream's connection is closed), and charged once."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway
from support.usage_rows import rows

pytestmark = pytest.mark.timeout(180)

# local, two translated upstream protocols, and a Responses upstream (passthrough)
MODELS = ["local", "fake", "fakeant", "fakeresp"]
WORDS = " ".join(f"w{i}" for i in range(40))


@pytest.fixture(scope="module")
def gw(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """``grace: 0``: a foreground stream whose client leaves stops at once; a background
    one must not."""
    config = gateway_config(
        fake,
        local={"rate": 100},
        keepalive_interval=0.2,
        streams={"grace": 0},
        usage={"flush_interval": 0.05},
        database_url=f"sqlite:///{workdir}/background-{time.monotonic_ns()}.db",
    )
    gateway = start_gateway(workdir, config)
    yield gateway
    gateway.proc.stop()


@pytest.fixture(scope="module")
def oa(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key="sk-client", max_retries=0) as c:
        yield c


def tag() -> str:
    """A unique option, so that each request's model name (and usage row) is its own."""
    return f"ttft=0.00{secrets.randbelow(10**6):06d}"


def model_for(provider: str, scene: str = "echo") -> str:
    if provider == "local":
        return "local/echo"
    return f"{provider}/{scene}?{tag()}"


def text_of(response: Any) -> str:
    return "".join(
        part.text
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "output_text"
    )


def wait_done(oa: openai.OpenAI, id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = oa.responses.retrieve(id)
        if found.status not in ("queued", "in_progress"):
            return found
        assert time.monotonic() < deadline, f"{id} still {found.status} after {timeout} s"
        time.sleep(0.05)


def usage_rows(gw: Gateway, model: str, timeout: float = 15) -> list[dict[str, Any]]:
    """The usage rows of ``model``, once there is one (then a moment for a second)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in rows(gw.config["database_url"]) if r["model"] == model]
        if found:
            time.sleep(0.3)  # a second row would have been written by now
            return [r for r in rows(gw.config["database_url"]) if r["model"] == model]
        assert time.monotonic() < deadline, f"no usage row for {model}"
        time.sleep(0.1)


def dump(event: Any) -> dict[str, Any]:
    return dict(event.model_dump(mode="json", exclude_none=True))


# --- create, poll --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", MODELS)
def test_a_background_response_is_queued_at_once_then_polled_to_its_end(
    oa: openai.OpenAI, gw: Gateway, provider: str
) -> None:
    model = model_for(provider)
    created = oa.responses.create(model=model, input=WORDS, background=True)
    assert created.background is True and created.status in ("queued", "in_progress")
    assert created.id.startswith("resp_") and created.output == []
    done = wait_done(oa, created.id)
    assert done.id == created.id and done.status == "completed" and done.background is True
    assert text_of(done).split() == WORDS.split()
    assert done.usage is not None and done.usage.output_tokens > 0
    foreground = oa.responses.create(model=model, input=WORDS)
    assert text_of(foreground) == text_of(done)
    if provider != "local":
        assert len(usage_rows(gw, model)) == 2  # this one and the foreground one


def test_background_needs_store(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oa.responses.create(model="local/echo", input="x", background=True, store=False)
    assert caught.value.body["param"] == "background"  # type: ignore[index]


def test_a_foreground_response_cannot_be_cancelled_nor_streamed_again(
    oa: openai.OpenAI,
) -> None:
    done = oa.responses.create(model="local/echo", input="foreground")
    assert done.background is False
    with pytest.raises(openai.BadRequestError):
        oa.responses.cancel(done.id)
    with pytest.raises(openai.BadRequestError):
        oa.responses.retrieve(done.id, stream=True)
    with pytest.raises(openai.NotFoundError):
        oa.responses.cancel("resp_never")


# --- the stream, dropped and resumed ----------------------------------------------------------


def read(stream: Any, keep: int | None = None) -> list[dict[str, Any]]:
    """The events of ``stream`` (all, or the first ``keep``), then the connection closed."""
    out: list[dict[str, Any]] = []
    with stream:
        for event in stream:
            out.append(dump(event))
            if keep is not None and len(out) >= keep:
                break
    return out


def content(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What two runs of one request share: the event types and their text."""
    return [(e["type"], e.get("delta")) for e in events]


@pytest.mark.parametrize("provider", ["local", "fake", "fakeresp"])
def test_drops_at_random_points_resume_with_no_gap_and_no_duplicate(
    oa: openai.OpenAI, gw: Gateway, provider: str
) -> None:
    """Dropped after a random number of events, then after another, then read to the
    end with ``starting_after``: the pieces are the whole stream of that response, as
    read again from its start, and the same events an undisturbed run gives."""
    rng = random.Random(f"background-{provider}")
    model = model_for(provider)
    calm = read(oa.responses.create(model=model, input=WORDS, background=True, stream=True))
    assert [e["sequence_number"] for e in calm] == list(range(len(calm)))
    assert calm[-1]["type"] == "response.completed"
    for _ in range(4):
        model = model_for(provider)
        stream = oa.responses.create(model=model, input=WORDS, background=True, stream=True)
        pieces = read(stream, keep=rng.randint(1, len(calm) - 1))
        id = pieces[0]["response"]["id"]
        while pieces[-1]["type"] != "response.completed":
            after = pieces[-1]["sequence_number"]
            rest = oa.responses.retrieve(id, stream=True, starting_after=after)
            left = len(calm) - len(pieces)
            pieces += read(rest, keep=rng.randint(1, left) if left > 1 else None)
        assert [e["sequence_number"] for e in pieces] == list(range(len(calm)))
        assert pieces == read(oa.responses.retrieve(id, stream=True))
        assert content(pieces) == content(calm)
        assert len(usage_rows(gw, model) if provider != "local" else [1]) == 1
    assert wait_done(oa, id).status == "completed"


@pytest.mark.parametrize("provider", ["fake", "fakeresp"])
def test_it_survives_the_clients_disconnect_and_is_retrieved_completed(
    oa: openai.OpenAI, gw: Gateway, fake: FakeUpstream, provider: str
) -> None:
    """The client reads two events and leaves (``grace`` is 0 here): the upstream is
    read to its end all the same, and the response is retrieved completed."""
    model = f"{provider}/gen/60?gap=0.01&{tag()}"
    first = read(oa.responses.create(model=model, input="x", background=True, stream=True), 2)
    id = first[0]["response"]["id"]
    done = wait_done(oa, id)
    assert done.status == "completed" and text_of(done).split() == [f"tok{i}" for i in range(60)]
    entry = fake.find(model.partition("/")[2])
    assert entry["complete"] and not entry["client_closed"]
    assert len(usage_rows(gw, model)) == 1
    if provider == "fakeresp":  # the gateway runs it: the upstream is called in the foreground
        assert "background" not in entry["body"] and entry["body"]["store"] is False


def test_it_cannot_be_continued_before_it_ends_and_a_delete_stops_it(
    oa: openai.OpenAI, fake: FakeUpstream
) -> None:
    model = f"fake/gen/400?gap=0.02&{tag()}"
    created = oa.responses.create(model=model, input="x", background=True)
    with pytest.raises(openai.BadRequestError) as caught:
        oa.responses.create(model="local/echo", input="y", previous_response_id=created.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    fake.find(model.partition("/")[2], timeout=10)
    asked = time.time()
    oa.responses.delete(created.id)  # a running one is stopped, then forgotten
    entry = wait_upstream_end(fake, model.partition("/")[2])
    assert entry["client_closed"] and entry["ended"] - asked < 5.0  # a guard, see below
    time.sleep(0.3)  # its end must not bring it back
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(created.id)


# --- cancel ---------------------------------------------------------------------------------


def wait_upstream_end(fake: FakeUpstream, upstream_model: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    entry = fake.find(upstream_model)
    while not entry.get("ended") and time.monotonic() < deadline:
        time.sleep(0.05)
        entry = fake.find(upstream_model)
    return entry


@pytest.mark.parametrize("provider", ["fake", "fakeant", "fakeresp"])
def test_cancel_closes_the_upstream_and_charges_once(
    oa: openai.OpenAI, gw: Gateway, fake: FakeUpstream, provider: str
) -> None:
    model = f"{provider}/gen/2000?gap=0.02&{tag()}"
    created = oa.responses.create(model=model, input="long", background=True)
    upstream_model = model.partition("/")[2]
    fake.find(upstream_model, timeout=10)  # the upstream is being read
    with oa.responses.retrieve(created.id, stream=True) as stream:  # until text was made
        assert any(e.type == "response.output_text.delta" for e in stream)
    asked = time.time()
    cancelled = oa.responses.cancel(created.id)
    assert cancelled.id == created.id and cancelled.status == "cancelled"
    entry = wait_upstream_end(fake, upstream_model)
    # the stop closes the upstream's connection at once; 5 s is a guard far above the
    # expected few milliseconds (a loaded 2-core machine stalls any step)
    assert entry["client_closed"] and entry["ended"] - asked < 5.0
    assert not entry["complete"]
    assert oa.responses.retrieve(created.id).status == "cancelled"
    assert oa.responses.cancel(created.id).status == "cancelled"  # again: the same end
    found = usage_rows(gw, model)
    assert len(found) == 1 and found[0]["outcome"] == "cancelled"
    assert found[0]["output_tokens"] > 0  # what was generated before the stop


def test_cancel_while_the_upstream_is_being_opened(oa: openai.OpenAI, fake: FakeUpstream) -> None:
    """Stopped before the upstream answered: no answer is waited for, it ends cancelled."""
    model = f"fake/echo?head_after=3600&{tag()}"
    created = oa.responses.create(model=model, input="never", background=True)
    fake.find(model.partition("/")[2], timeout=10)
    asked = time.time()
    assert oa.responses.cancel(created.id).status == "cancelled"
    entry = wait_upstream_end(fake, model.partition("/")[2])
    assert entry["client_closed"] and entry["ended"] - asked < 5.0  # a guard, see above
    events = read(oa.responses.retrieve(created.id, stream=True))
    assert events[-1]["response"]["status"] == "cancelled"


# --- the gateway running it goes away -----------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restart_mid_way_leaves_it_failed_not_running(
    workdir: Path, fake: FakeUpstream, how: str
) -> None:
    """SIGTERM: the drain (0.5 s here) passes, the response ends ``failed``
    (``shutting_down``) and that is kept. SIGKILL: nothing is written; the gateway
    started again on the same database finds nobody producing it and says ``failed``."""
    config = gateway_config(
        fake,
        shutdown_drain=0.5,
        database_url=f"sqlite:///{workdir}/restart-{time.monotonic_ns()}.db",
    )
    first = start_gateway(workdir, config)
    try:
        with openai.OpenAI(base_url=first.base_url, api_key="x", max_retries=0) as oa:
            created = oa.responses.create(
                model=f"fake/gen/4000?gap=0.02&{tag()}", input="x", background=True
            )
            deadline = time.monotonic() + 10
            while oa.responses.retrieve(created.id).status != "in_progress":
                assert time.monotonic() < deadline, "it never began"
                time.sleep(0.05)
        if how == "sigkill":
            first.proc.popen.kill()
            first.proc.popen.wait(5)
        else:
            first.proc.stop()
    finally:
        first.proc.stop()
    again = start_gateway(workdir, first.config)
    try:
        with openai.OpenAI(base_url=again.base_url, api_key="x", max_retries=0) as oa:
            found = oa.responses.retrieve(created.id)
            assert found.status == "failed" and found.error is not None
            code = "shutting_down" if how == "sigterm" else "server_error"
            assert found.error.code == code
    finally:
        again.proc.stop()
