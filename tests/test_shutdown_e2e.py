"""Graceful shutdown: on SIGTERM the gateway stops accepting, lets streams finish up to
the drain timeout, then ends the rest with an error frame a client can resume from."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
from support.procs import FakeUpstream, gateway_config, start_gateway

from tokenrelay.sse import SSEDecoder


def collect(url: str, words: int, out: dict[str, Any], started: threading.Event) -> None:
    body = {
        "model": "local/echo",
        "stream": True,
        "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(words))}],
    }
    frames: list[Any] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        decoder = SSEDecoder()
        for chunk in r.iter_raw():
            for event in decoder.feed(chunk):
                frames.append(event.data if event.data == "[DONE]" else json.loads(event.data))
                started.set()
    out["frames"] = frames


def test_sigterm_drains_then_interrupts(workdir: Path, fake: FakeUpstream) -> None:
    gw = start_gateway(workdir, gateway_config(fake, local={"rate": 10}, shutdown_drain=1.0))
    short: dict[str, Any] = {}
    long: dict[str, Any] = {}
    events = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=collect, args=(gw.url, 4, short, events[0])),
        threading.Thread(target=collect, args=(gw.url, 200, long, events[1])),
    ]
    for t in threads:
        t.start()
    for e in events:
        assert e.wait(10)
    gw.proc.popen.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    # uvicorn re-raises SIGTERM once its shutdown is complete (the conventional status)
    assert gw.proc.popen.wait(15) in (0, -signal.SIGTERM)
    assert "Finished server process" in gw.proc.output()
    assert short["frames"][-1] == "[DONE]", "a stream that ends within the drain ends normally"
    last = long["frames"][-1]
    assert last["error"]["code"] == "shutting_down", "the rest end with a resumable error"
    assert 3 < len(long["frames"]) < 150
