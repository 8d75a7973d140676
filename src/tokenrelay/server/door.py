"""The front door: which requests may come in at all, judged from their headers alone.

- ``Host`` must name the gateway (DNS rebinding: a page at ``evil.example`` whose name
  was pointed at 127.0.0.1 would be same-origin with the gateway and read its answers).
  IP addresses, ``localhost`` and ``*.localhost``, the bind host and
  ``http.allowed_hosts`` are served; ``"*"`` turns the check off. It applies in open
  mode (no master key: the rebinding page would spend the upstream keys) and whenever
  ``allowed_hosts`` lists a name; with a master key and no list, any Host is served (a
  page has no key to send, and a proxy in front may pass any name).
- A request that carries ``Origin`` comes from a browser. Same-origin (the origin's
  host and port are the ``Host``: the chat page, the dashboard) is let in;
  cross-origin only from ``http.cors_origins`` (``"*"``: any), with CORS headers and
  preflights answered here; any other origin gets 403, so a page elsewhere cannot spend
  the gateway's keys with a form post or a ``text/plain`` fetch (CSRF).
- A browser's request with a body must say ``Content-Type: application/json`` (or
  ``…+json``), else 415: the types a page may send cross-origin without a preflight
  are refused. Requests without ``Origin`` (curl, the SDKs) may send any type.

Errors are in the protocol of the path (``api.protocol_for``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..config import HttpConfig
from ..events import GatewayError
from ..numbers import decimal
from .api import protocol_error, protocol_for

HeaderList = list[tuple[bytes, bytes]]

ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = (
    b"X-Request-Id, X-Stream-Id, X-Tokenrelay-Attempts, X-Tokenrelay-Deployment, Retry-After"
)
MAX_AGE = b"600"  # seconds a browser may keep a preflight's answer
_DEFAULT_PORT = {"http": 80, "https": 443}
_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~, ")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` too) as (lower-case host, port); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, sep, rest = value.partition(":")
        rest = ":" + rest if sep else ""
    if not rest:
        return host, None
    port = decimal(rest[1:]) if rest.startswith(":") else None
    return (host, port) if port is not None and port < 65536 else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


class Door:
    """Judges each request's Host, Origin and content type (see the module)."""

    def __init__(self, http: HttpConfig, *, open_mode: bool, bind_host: str | None) -> None:
        hosts = {h.strip().lower() for h in http.allowed_hosts}
        self.check_host = "*" not in hosts and (open_mode or bool(hosts))
        names = {"localhost", *(h for h in hosts if not h.startswith("*."))}
        if bind_host:
            names.add(bind_host.lower())
        self.names = frozenset(names)
        self.suffixes = (".localhost", *(h[1:] for h in hosts if h.startswith("*.")))
        self._served: set[str] = set()  # Host values already judged good (a few)
        self.any_origin = "*" in http.cors_origins
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in http.cors_origins)

    def host_allowed(self, host: str | None) -> bool:
        if not self.check_host or host is None or host in self._served:
            return True  # (an HTTP/1.0 request may have no Host)
        split = _split_host(host)
        if split is None:
            return False
        name = split[0]
        if name in self.names or name.endswith(self.suffixes) or _is_ip(name):
            if len(self._served) < 64:
                self._served.add(host)
            return True
        return False

    def same_origin(self, origin: str, host: str | None) -> bool:
        scheme, sep, rest = origin.lower().partition("://")
        if not sep or scheme not in _DEFAULT_PORT or host is None:
            return False
        mine, theirs = _split_host(host), _split_host(rest)
        if mine is None or theirs is None:
            return False
        default = _DEFAULT_PORT[scheme]
        return mine[0] == theirs[0] and (mine[1] or default) == (theirs[1] or default)

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin.lower().rstrip("/") in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Send | None:
        """None when the request was answered here (refused, or a preflight); else the
        ``send`` to serve it with (wrapped to add CORS headers for another origin)."""
        host = origin = content_type = None
        body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                body = True
        if not self.host_allowed(host):
            await self._refuse(scope, receive, send, _host_error(host))
            return None
        if origin is None:
            return send
        cross = not self.same_origin(origin, host)
        if cross and not self.origin_allowed(origin):
            await self._refuse(scope, receive, send, _origin_error(origin))
            return None
        cors = _cors_headers(origin) if cross else []
        if cross and scope["method"] == "OPTIONS":
            preflight = Headers(scope=scope).get("access-control-request-method")
            if preflight is not None:
                await _preflight(scope, cors)(scope, receive, send)
                return None
        if body and not _is_json(content_type):
            await self._refuse(scope, receive, send, _type_error(content_type), cors)
            return None
        return _adding(send, cors) if cors else send

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: GatewayError,
        cors: HeaderList | None = None,
    ) -> None:
        response = protocol_error(protocol_for(scope["path"], Headers(scope=scope)), error)
        await response(scope, receive, _adding(send, cors) if cors else send)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _cors_headers(origin: str) -> HeaderList:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSE_HEADERS),
        (b"vary", b"Origin"),
    ]


def _preflight(scope: Scope, cors: HeaderList) -> Response:
    asked = Headers(scope=scope).get("access-control-request-headers", "").encode("latin-1")
    headers = [
        *cors,
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-max-age", MAX_AGE),
    ]
    if asked and all(c in _TOKEN for c in asked.lower()):
        headers.append((b"access-control-allow-headers", asked))
    response = Response(status_code=204)
    response.raw_headers += headers
    return response


def _adding(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> Send:
    extra = list(headers)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


def _host_error(host: str | None) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"The gateway does not serve the host {host!r}; list it in http.allowed_hosts.",
        code="host_not_allowed",
    )


def _origin_error(origin: str) -> GatewayError:
    return GatewayError(
        "permission",
        f"Requests from the web origin {origin!r} are not allowed; list it in http.cors_origins.",
        status=403,
        code="origin_not_allowed",
    )


def _type_error(content_type: str | None) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"A browser's request body must be application/json, not {content_type!r}.",
        status=415,
        code="unsupported_media_type",
    )
