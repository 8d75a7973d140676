"""The access line of a request the gateway refuses still says which model was asked
for and whether it was a stream (a 400 for a bad parameter, a 429 over a limit)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway

MASTER = "tr-master-rejected-0123456789"


def access_line(gw: Gateway, request_id: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in gw.proc.output().splitlines() if request_id in line]
        if lines or time.monotonic() > deadline:
            assert lines, f"no access line for {request_id}"
            return lines[-1]
        time.sleep(0.05)


def test_rejected_requests_log_their_model_and_stream_flag(
    workdir: Path, fake: FakeUpstream
) -> None:
    gw = start_gateway(workdir, gateway_config(fake, master_key=MASTER))
    try:
        master = {"Authorization": f"Bearer {MASTER}"}
        made = httpx.post(f"{gw.url}/admin/keys", json={"name": "slow", "rpm": 1}, headers=master)
        key = {"Authorization": f"Bearer {made.json()['secret']}"}
        messages = [{"role": "user", "content": "hi"}]
        cases = [
            # a bad parameter: 400
            (master, {"model": "local/echo", "stream": True, "temperature": "hot"}, 400),
            (key, {"model": "local/echo", "stream": True}, 200),
            # over rpm: 429
            (key, {"model": "local/echo", "stream": True}, 429),
        ]
        for headers, body, status in cases:
            reply = httpx.post(
                f"{gw.base_url}/chat/completions",
                json={**body, "messages": messages},
                headers=headers,
                timeout=20,
            )
            assert reply.status_code == status, reply.text
            if status == 200:
                continue
            line = access_line(gw, reply.headers["x-request-id"])
            assert re.search(rf"\bstatus={status}\b", line), line
            assert " model=local/echo " in line and " stream=True " in line, line
    finally:
        gw.proc.stop()
