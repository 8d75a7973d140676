"""What the parts of the stream hub share, so that none imports the hub: the errors of
a stream, and the faces of a stream and of the hub that the Redis mirror sees
(``hub.Stream`` and ``hub.StreamHub`` have them). The reader declares its own
(``reader.Source``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..events import GatewayError


def gone(stream_id: str, detail: str) -> GatewayError:
    return GatewayError("gone", f"Stream {stream_id}: {detail}", code="stream_gone")


def not_found(stream_id: str) -> GatewayError:
    return GatewayError(
        "not_found", f"No stream {stream_id} (or it is not yours).", code="stream_not_found"
    )


class MirroredStream(Protocol):
    """A stream produced here, as its mirror writes it out and hears of it."""

    id: str
    owner: str | None
    protocol: str
    done: bool
    resumes: int

    def cancel(self) -> None: ...


class LocalStreams(Protocol):
    """The streams of this replica, as the mirror looks them up."""

    def live(self) -> Sequence[MirroredStream]: ...

    def local(self, stream_id: str) -> MirroredStream | None: ...
