"""The one list of protocols. Everything that depends on which protocols exist (the
ingress routes, the hot-path table, the provider codecs, the config check, the SDK's
wires, the translation table) reads it; nothing else names a protocol.

Adding a protocol: a subpackage that declares ``PROTOCOL`` (see ``base.ProtocolSpec``)
and one line in ``BUILTIN`` below. A test or a plugin may ``register`` one at run time,
before the app is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl

from . import anthropic, completions, gemini, openai, responses
from .base import ClientProtocol, ProtocolSpec, UpstreamProtocol

BUILTIN: tuple[ProtocolSpec, ...] = (
    openai.PROTOCOL,  # first client protocol: the default shape of any other route
    anthropic.PROTOCOL,
    gemini.PROTOCOL,
    responses.PROTOCOL,
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
        self._rules: list[
            tuple[tuple[str, ...], tuple[tuple[str, str], ...], str | None, ProtocolSpec]
        ] = []
        for p in protocols[1:]:
            owned = [p.prefix + "/"] if p.prefix else []
            shapes: list[tuple[str, str]] = []
            for r in p.routes:
                shape = r.template()
                if declared[r.path] != 1:
                    continue
                if shape is None:
                    owned.append(r.path)
                else:  # a head shared with other routes is owned with its tail only
                    shapes.append((shape[0], shape[2]))
            self._rules.append((tuple(owned), tuple(shapes), p.marker, p))
        self.chat: dict[tuple[str, str], ProtocolSpec] = {
            ("POST", path): p for p in protocols for path in p.paths("chat") if "{" not in path
        }
        """The hot path's table: (method, path) -> the protocol of a fixed chat route."""
        self._templates: list[tuple[str, str, str, dict[str, str], ProtocolSpec]] = []
        for p in protocols:
            for r in p.routes:
                shape = r.template()
                if shape is not None and r.kind == "chat":
                    for pre in dict.fromkeys(("", p.prefix)):
                        head, param, tail = shape
                        self._templates.append((pre + head, param, tail, dict(r.fixed), p))
        self.heads: tuple[str, ...] = tuple(dict.fromkeys(t[0] for t in self._templates))
        """The heads of the chat routes with a parameter: a path that starts with none
        of them is no such route (one ``str.startswith`` on the hot path)."""
        self.key_params: list[tuple[bytes, bytes]] = [
            (p.key_param.encode() + b"=", (p.credentials or ("x-api-key",))[0].encode())
            for p in protocols
            if p.key_param
        ]
        """(``name=``, header): query parameters that carry the key, and the header they
        are read as."""

    def match_chat(self, path: str) -> tuple[ProtocolSpec, dict[str, str]] | None:
        """The protocol and path parameters of a chat route with a parameter."""
        for head, param, tail, fixed, p in self._templates:
            if path.startswith(head) and path.endswith(tail) and len(path) > len(head + tail):
                return p, {**fixed, param: path[len(head) : len(path) - len(tail)]}
        return None

    def params(self, path: str, query: bytes) -> dict[str, str] | None:
        """What a chat route with a parameter hands its protocol's ``decode_request``:
        the query's parameters, the route's fixed ones and the path parameter (these
        win); ``None`` for a fixed route."""
        if not path.startswith(self.heads):
            return None
        match = self.match_chat(path)
        if match is None:
            return None
        return {**dict(parse_qsl(query.decode("latin-1"))), **match[1]}

    def protocol_for(self, path: str, headers: Mapping[str, str]) -> ProtocolSpec:
        for owned, shapes, marker, p in self._rules:
            if path.startswith(owned) or (marker is not None and marker in headers):
                return p
            for head, tail in shapes:
                if path.startswith(head) and path.endswith(tail):
                    return p
        return self.default

    def paths(self, kind: str) -> list[str]:
        """Every path of ``kind`` over the client protocols, once each, in order."""
        return list(dict.fromkeys(path for p in self.protocols for path in p.paths(kind)))

    def prefixes(self) -> list[str]:
        return [p.prefix for p in self.protocols if p.prefix]


REGISTRY = Registry(BUILTIN)
"""The protocols this process speaks."""
