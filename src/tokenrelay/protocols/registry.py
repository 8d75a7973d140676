"""The one list of protocols. Everything that depends on which protocols exist (the
ingress routes, the hot-path table, the provider codecs, the config check, the SDK's
wires, the translation table) reads it; nothing else names a protocol.

Adding a protocol: a subpackage that declares ``PROTOCOL`` (see ``base.ProtocolSpec``)
and one line in ``BUILTIN`` below. A test or a plugin may ``register`` one at run time,
before the app is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from . import anthropic, completions, gemini, openai
from .base import ClientProtocol, ProtocolSpec, UpstreamProtocol

BUILTIN: tuple[ProtocolSpec, ...] = (
    openai.PROTOCOL,  # first client protocol: the default shape of any other route
    anthropic.PROTOCOL,
    gemini.PROTOCOL,
    completions.PROTOCOL,
)


class Registry:
    """Protocols by name, in the order they were registered."""

    def __init__(self, protocols: tuple[ProtocolSpec, ...]) -> None:
        self._by_name: dict[str, ProtocolSpec] = {}
        for p in protocols:
            self.register(p)

    def register(self, protocol: ProtocolSpec) -> None:
        if protocol.name in self._by_name:
            raise ValueError(f"protocol {protocol.name!r} is registered already")
        self._by_name[protocol.name] = protocol

    def unregister(self, name: str) -> None:
        del self._by_name[name]

    def __iter__(self) -> Iterator[ProtocolSpec]:
        return iter(self._by_name.values())

    def get(self, name: str) -> ProtocolSpec:
        return self._by_name[name]

    def clients(self) -> list[ProtocolSpec]:
        return [p for p in self if p.client is not None]

    def client(self, name: str) -> ClientProtocol:
        codec = self._by_name[name].client
        if codec is None:
            raise KeyError(f"protocol {name!r} has no client side")
        return codec

    def upstream(self, name: str) -> UpstreamProtocol:
        codec = self._by_name[name].upstream
        if codec is None:
            raise KeyError(f"protocol {name!r} has no upstream side")
        return codec

    def upstream_names(self) -> list[str]:
        """The protocols a provider may speak (an endpoint of another is not one)."""
        return [p.name for p in self if p.upstream is not None and p.endpoint_of is None]

    def ingress(self) -> Ingress:
        """Which client protocol answers a request, as of now."""
        return Ingress(self.clients())


class Ingress:
    """The client protocol of a request: the protocol whose prefix the path is under,
    or that alone declares the path (and what lies under it: ``/v1/messages/...``), or
    whose marker header the request carries; otherwise the first client protocol
    (OpenAI). A table built once, read on every request."""

    def __init__(self, protocols: list[ProtocolSpec]) -> None:
        self.protocols = protocols
        self.default = protocols[0]
        declared: dict[str, int] = {}
        for p in protocols:
            for path in dict.fromkeys(r.path for r in p.routes):
                declared[path] = declared.get(path, 0) + 1
        self._rules: list[tuple[tuple[str, ...], str | None, ProtocolSpec]] = []
        for p in protocols[1:]:
            owned = [p.prefix + "/"] if p.prefix else []
            owned += [r.path for r in p.routes if declared[r.path] == 1]
            self._rules.append((tuple(owned), p.marker, p))
        self.chat: dict[tuple[str, str], ProtocolSpec] = {
            ("POST", path): p for p in protocols for path in p.paths("chat")
        }
        """The hot path's table: (method, path) -> the protocol of a chat route."""

    def protocol_for(self, path: str, headers: Mapping[str, str]) -> ProtocolSpec:
        for owned, marker, p in self._rules:
            if path.startswith(owned) or (marker is not None and marker in headers):
                return p
        return self.default

    def paths(self, kind: str) -> list[str]:
        """Every path of ``kind`` over the client protocols, once each, in order."""
        return list(dict.fromkeys(path for p in self.protocols for path in p.paths(kind)))

    def prefixes(self) -> list[str]:
        return [p.prefix for p in self.protocols if p.prefix]


REGISTRY = Registry(BUILTIN)
"""The protocols this process speaks."""
