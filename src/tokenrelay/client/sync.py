"""``Client``: the synchronous twin of ``AsyncClient``, derived, not rewritten.

Each ``Client`` owns a private event loop on a daemon thread (a ``Portal``); every
sync method hands the matching coroutine of the async client to that loop and waits.
So retries, timeouts, resume and cancel exist once, in the async code, and behave
the same in both clients. The alternatives were worse here: a generated sync copy
(unasync style) doubles the code that must stay right, and makes timeouts depend on two
transports; running each call with ``asyncio.run`` would lose the connection pool and
cannot keep a stream open between two ``next()`` calls. The cost is one thread per
client and a thread hop per event, microseconds against a network read.

Interrupting a wait (Ctrl-C) cancels the coroutine on the loop and waits for it to
finish, so the stream's own cleanup (the cancel call) has run when the
``KeyboardInterrupt`` reaches the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from ..events import Event
from .aio import AsyncChat, AsyncClient, Messages
from .options import Retry, Timeouts
from .result import ChatResult
from .stream import AsyncChatStream
from .wire import ProtocolName

__all__ = ["ChatStream", "Client", "Portal", "SyncChat"]

T = TypeVar("T")

INTERRUPT_WAIT = 10.0  # seconds an interrupted call may take to clean up


class Portal:
    """A private event loop on a daemon thread; ``call`` runs an awaitable there."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tokenrelay-client", daemon=True
        )
        self._thread.start()

    def call(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop; its result, or its exception, here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a sync tokenrelay client was called from its own loop")
        if self._loop.is_closed():
            raise RuntimeError("the client is closed")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self._loop.create_task(_await(awaitable))
            tasks.append(task)
            task.add_done_callback(lambda t: _settle(t, done))

        def stop() -> None:  # runs after start() if start() was queued at all
            if tasks:
                tasks[0].cancel()
            elif not done.done():
                getattr(awaitable, "close", lambda: None)()  # never awaited: no warning
                done.set_exception(concurrent.futures.CancelledError())

        try:
            self._loop.call_soon_threadsafe(start)
            return done.result()
        except BaseException:
            if not done.done():  # interrupted here (Ctrl-C): stop the work, let it clean up
                self._loop.call_soon_threadsafe(stop)
                concurrent.futures.wait([done], INTERRUPT_WAIT)
            raise

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        """A generator over an async generator; closing it (``break``) closes the
        source, on the loop."""
        try:
            while True:
                try:
                    item = self.call(anext(source))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(source, "aclose", None)
            if close is not None and not self._loop.is_closed():
                self.call(close())

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _settle(task: asyncio.Task[T], done: concurrent.futures.Future[T]) -> None:
    if task.cancelled():  # (Future.cancel() would not wake concurrent.futures.wait)
        done.set_exception(concurrent.futures.CancelledError())
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())


class ChatStream:
    """The sync ``AsyncChatStream``: an iterator of events with ``text()``,
    ``final()``, ``close()``, usable in a ``with`` block. Leaving the block, ``close()``
    or a ``break`` out of a ``for`` loop stops the answer on the gateway."""

    def __init__(self, portal: Portal, stream: AsyncChatStream) -> None:
        self._portal = portal
        self._stream = stream

    @property
    def stream_id(self) -> str | None:
        """The gateway's ``X-Stream-Id``; ``None`` from a server that cannot resume."""
        return self._stream.stream_id

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``."""
        return self._stream.request_id

    @property
    def resumes(self) -> int:
        """How many times the stream re-attached after a drop."""
        return self._stream.resumes

    def __enter__(self) -> ChatStream:
        self._portal.call(self._stream.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self._portal.iterate(aiter(self._stream))

    def __next__(self) -> Event:
        try:
            return self._portal.call(anext(self._stream))
        except StopAsyncIteration:
            raise StopIteration from None

    def text(self) -> Iterator[str]:
        """The text of the first choice, delta by delta."""
        return self._portal.iterate(self._stream.text())

    def final(self) -> ChatResult:
        """Read to the end; the assembled answer."""
        return self._portal.call(self._stream.final())

    def current(self) -> ChatResult:
        """The answer assembled from the events read so far."""
        return self._stream.current()

    def close(self) -> None:
        """Stop the answer on the gateway (unless it ended) and release the connection."""
        self._portal.call(self._stream.aclose())


class SyncChat:
    """``client.chat`` of the sync client; see ``AsyncChat`` for the arguments."""

    def __init__(self, portal: Portal, chat: AsyncChat) -> None:
        self._portal = portal
        self._chat = chat

    def stream(
        self,
        *,
        model: str,
        messages: Messages,
        protocol: ProtocolName | None = None,
        timeout: Timeouts | None = None,
        retry: Retry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatStream:
        """A streaming answer (sent when the stream is entered or first iterated)."""
        stream = self._chat.stream(
            model=model,
            messages=messages,
            protocol=protocol,
            timeout=timeout,
            retry=retry,
            extra_headers=extra_headers,
            **params,
        )
        return ChatStream(self._portal, stream)

    def create(
        self,
        *,
        model: str,
        messages: Messages,
        protocol: ProtocolName | None = None,
        timeout: Timeouts | None = None,
        retry: Retry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResult:
        """One non-streaming answer."""
        return self._portal.call(
            self._chat.create(
                model=model,
                messages=messages,
                protocol=protocol,
                timeout=timeout,
                retry=retry,
                extra_headers=extra_headers,
                **params,
            )
        )


class Client:
    """The synchronous client; the arguments are ``AsyncClient``'s. Close it (or use
    it in a ``with`` block) to stop its thread."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        protocol: ProtocolName = "openai",
        timeouts: Timeouts | None = None,
        retry: Retry | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._portal = Portal()
        self._async = AsyncClient(
            base_url,
            api_key,
            protocol=protocol,
            timeouts=timeouts,
            retry=retry,
            headers=headers,
            http_client=http_client,
        )
        self.chat = SyncChat(self._portal, self._async.chat)

    @property
    def base_url(self) -> str:
        """Where the client points."""
        return self._async.base_url

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        try:
            self._portal.call(self._async.aclose())
        finally:
            self._portal.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
