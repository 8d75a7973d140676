"""``tokenrelay chat`` against real gateways: one-shot replies streamed per token,
``--no-stream``, ``--json``, errors on stderr, and the interactive session driven
through a pseudo-terminal (prompt, history, streamed replies with a stats line, Ctrl-C
stopping a reply while the session goes on)."""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.procs import FakeUpstream, Gateway, gateway_config, start_gateway, tokenrelay

STATS = re.compile(rb"\x1b\[2mttft \d+\.\d\ds \xc2\xb7 [\d.]+ tok/s \xc2\xb7 (\d+) in / (\d+) out")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tokenrelay(*args), capture_output=True, text=True, timeout=60, input=stdin
    )


@pytest.fixture(scope="module")
def slow_gateway(workdir: Path, fake: FakeUpstream) -> Iterator[Gateway]:
    """local/echo at 10 words a second; streams kept 5 s without a reader (so only the
    cancel call can stop one at once)."""
    gw = start_gateway(workdir, gateway_config(fake, local={"rate": 10}, streams={"grace": 5}))
    yield gw
    gw.proc.stop()


# --- one-shot ---------------------------------------------------------------------------


def test_chat_prints_the_reply(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "-m", "local/echo", "hello 世界 again")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello 世界 again\n"


def test_chat_no_stream(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "--no-stream", "--api-key", "k", "one two")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one two\n"


def test_chat_system_prompt_on_either_wire(gateway: Gateway) -> None:
    for protocol in ("openai", "anthropic"):
        args = ("--base-url", gateway.base_url, "--protocol", protocol, "--system", "be brief")
        result = run("chat", *args, "--json", "x y")
        assert result.returncode == 0, result.stderr
        usage = json.loads(result.stdout.splitlines()[-1])
        assert usage["type"] == "usage" and usage["input"] == 4, "the system prompt was sent"


def test_chat_error_goes_to_stderr(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "-m", "nobody/none", "x")
    assert result.returncode == 1
    assert "404" in result.stderr and "nobody/none" in result.stderr
    assert "(request req_" in result.stderr
    assert result.stdout == ""


def test_chat_unreachable_gateway() -> None:
    result = run("chat", "--base-url", "http://127.0.0.1:9/v1", "x")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_chat_streams_token_by_token(slow_gateway: Gateway) -> None:
    """At 10 words a second, the first words are on stdout long before the last."""
    words = [f"w{i}" for i in range(20)]
    proc = subprocess.Popen(
        tokenrelay("chat", "--base-url", slow_gateway.base_url, " ".join(words)),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    start = time.monotonic()
    first = proc.stdout.read(2)
    first_at = time.monotonic() - start
    still_running = proc.poll() is None
    rest = proc.stdout.read()
    proc.wait(30)
    assert (first + rest).decode() == " ".join(words) + "\n"
    assert first == b"w0"
    assert still_running, f"the first token came only at the end ({first_at:.2f}s)"


# --- a session over pipes: for scripts ------------------------------------------------


def test_session_over_pipes_keeps_history(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, stdin="hello world\n\nsecond one\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hello world" and lines[2] == "second one"
    assert re.fullmatch(r"ttft \d+\.\d\ds · [\d.]+ tok/s · 2 in / 2 out tokens", lines[1])
    assert lines[3].endswith("6 in / 2 out tokens"), "the second turn carried the first"
    assert "\x1b" not in result.stdout and ">" not in result.stdout, "no prompt, no colour"


def test_json_prints_one_event_per_line(gateway: Gateway) -> None:
    result = run("chat", "--base-url", gateway.base_url, "--json", stdin="a b\n/exit\nnever\n")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["start", "text", "text", "finish", "usage"]
    assert "".join(e.get("text", "") for e in events) == "a b"
    assert events[-2] == {"type": "finish", "reason": "stop"}


# --- the interactive session in a terminal --------------------------------------------


class Terminal:
    """``tokenrelay`` on a pseudo-terminal: what it printed, and when each byte came."""

    def __init__(self, *args: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            argv = tokenrelay(*args)
            os.execve(argv[0], argv, {**os.environ, "TERM": "dumb"})
        self.pid, self.fd = pid, fd
        self.out = b""
        self.arrivals: list[tuple[int, float]] = []  # (len(out) after a read, time)
        self.pos = 0

    def expect(self, pattern: bytes, timeout: float = 10.0) -> re.Match[bytes]:
        """Wait for ``pattern`` after what previous calls matched."""
        deadline = time.monotonic() + timeout
        while not (match := re.compile(pattern).search(self.out, self.pos)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"{pattern!r} not seen in {self.out[self.pos :]!r}")
            self.out += os.read(self.fd, 4096)
            self.arrivals.append((len(self.out), time.monotonic()))
        self.pos = match.end()
        return match

    def arrived(self, index: int) -> float:
        """When byte ``index`` of the output was read."""
        return next(t for end, t in self.arrivals if end > index)

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def prompt(self) -> None:
        """Wait for the prompt, and for readline to take the terminal (keys typed
        before that, as a Ctrl-D, would meet the line discipline instead)."""
        self.expect(rb"(^|\r\n)> ")
        time.sleep(0.2)

    def wait(self) -> int:
        """The exit code, once the session ended by itself."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        raise AssertionError("the session did not end")

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def reply(
    term: Terminal, message: str, first_word: str | None = None
) -> tuple[re.Match[bytes], re.Match[bytes]]:
    """Send a message; the first word of the reply and the stats line after it."""
    term.send(message + "\r")
    term.expect(re.escape(message.encode()) + rb"\r\n")  # the terminal's echo of the line
    first = term.expect(re.escape((first_word or message.split()[0]).encode()))
    return first, term.expect(STATS)


def test_session_in_a_terminal_streams_replies_with_stats(slow_gateway: Gateway) -> None:
    with Terminal("chat", "--base-url", slow_gateway.base_url) as term:
        term.prompt()
        first, stats = reply(term, "one two three four five six seven eight")
        streamed = term.arrived(stats.start()) - term.arrived(first.start())
        assert streamed > 0.4, "the reply grew word by word before its stats line"
        assert stats.group(1, 2) == (b"8", b"8")
        term.prompt()
        _, stats = reply(term, "nine ten")
        assert stats.group(1, 2) == (b"18", b"2"), "the history was sent"
        term.prompt()
        term.send("/exit\r")
        assert term.wait() == 0


def test_ctrl_c_stops_the_reply_and_the_session_goes_on(
    slow_gateway: Gateway, fake: FakeUpstream
) -> None:
    model = f"gen/30?gap=0.05&ttft=0.00{secrets.randbelow(10**6):06d}"
    with Terminal("chat", "--base-url", slow_gateway.base_url, "-m", f"fake/{model}") as term:
        term.prompt()
        term.send("go\r")
        term.expect(rb"tok3 ")
        term.send("\x03")  # Ctrl-C: the terminal sends SIGINT to the session
        interrupted = time.time()
        term.expect(rb"\[stopped\]")
        term.prompt()
        deadline = time.monotonic() + 2
        while True:
            first: dict[str, Any] = next(e for e in fake.log() if e["model"] == model)
            if first["ended"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert first["client_closed"] and first["ended"] - interrupted < 1.0
        assert first["events_sent"] < 20, "the upstream stopped generating"
        _, stats = reply(term, "again", "tok0")  # the session goes on; this reply is whole
        assert b"tok29" in term.out[stats.start() - 20 : stats.start()]
        term.prompt()
        term.send("\x04")  # Ctrl-D
        assert term.wait() == 0
