"""Admission pacing (server/pacing.py): a burst of new requests starts a few per turn of
the event loop, first come first served; a lone request never waits; a request that
leaves the line does not hold up the others."""

from __future__ import annotations

import asyncio

from tokenrelay.server.pacing import Pacer


async def _turns(counter: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        counter[0] += 1
        await asyncio.sleep(0)


def test_a_burst_starts_a_few_per_turn_in_order() -> None:
    async def run() -> list[tuple[int, int]]:
        pacer = Pacer(2)
        turn = [0]
        stop = asyncio.Event()
        ticker = asyncio.ensure_future(_turns(turn, stop))
        await asyncio.sleep(0)
        started: list[tuple[int, int]] = []

        async def request(i: int) -> None:
            await pacer.turn()
            started.append((i, turn[0]))

        await asyncio.gather(*(request(i) for i in range(7)))
        stop.set()
        await ticker
        return started

    started = asyncio.run(run())
    assert [i for i, _ in started] == list(range(7))
    per_turn: dict[int, int] = {}
    for _, t in started:
        per_turn[t] = per_turn.get(t, 0) + 1
    assert max(per_turn.values()) == 2
    assert len(per_turn) == 4


def test_a_lone_request_does_not_wait_and_zero_turns_pacing_off() -> None:
    async def run(per_turn: int) -> bool:
        pacer = Pacer(per_turn)
        task = asyncio.ensure_future(pacer.turn())
        await asyncio.sleep(0)  # one step: done at once, without waiting for a turn
        return task.done()

    assert asyncio.run(run(1))
    assert asyncio.run(run(0))


def test_a_request_that_leaves_the_line_is_skipped() -> None:
    async def run() -> list[int]:
        pacer = Pacer(1)
        started: list[int] = []

        async def request(i: int) -> None:
            await pacer.turn()
            started.append(i)

        tasks = [asyncio.ensure_future(request(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()  # the client went away while waiting
        await asyncio.gather(*tasks, return_exceptions=True)
        return started

    assert asyncio.run(run()) == [0, 2, 3]
