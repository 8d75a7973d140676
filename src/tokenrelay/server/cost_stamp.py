"""The cost of a stream in its final usage frame, when the client asks for it (README,
"Prompt caching": ``X-Tokenrelay-Cost: include``, or ``"usage": {"include": true}``).

Every frame the encoder or passthrough wrote goes through ``CostStamp`` only when the
cost was asked; a frame its protocol's ``CostPlace.marker`` does not match is passed on
untouched, unparsed. The final usage frame is decoded, given ``cost`` (USD, what the
usage row will be charged: the price of the usage counted so far, which that frame
completes) in its usage object, and encoded again: the one frame of a passthrough that
is then not byte for byte the upstream's. Streams whose cost was not asked never come
here.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ..protocols.base import CostPlace
from ..sse import SSEDecoder
from ..sse import encode as sse_encode

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class CostStamp:
    """``place``: where the client protocol's final usage frame carries it; ``price``:
    the cost of what the request is charged so far (``None``: the model has no price)."""

    def __init__(self, place: CostPlace, price: Callable[[], float | None]) -> None:
        self.place = place
        self.price = price

    def __call__(self, frames: list[bytes]) -> list[bytes]:
        marker = self.place.marker
        return [self._stamped(f) if marker.search(f) else f for f in frames]

    def _stamped(self, frame: bytes) -> bytes:
        events = SSEDecoder().feed(frame)
        if len(events) != 1:
            return frame
        event = events[0]
        try:
            data = _decode(event.data)
        except msgspec.DecodeError:
            return frame
        usage = self.place.final(event.event, data)
        if usage is None:
            return frame
        cost = self.price()
        if cost is None:
            return frame
        usage["cost"] = round(cost, 9)
        return sse_encode(_encode(data), event=event.event)
