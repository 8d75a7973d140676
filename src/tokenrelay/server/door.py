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
from starlette.types import ASGIApp, Message, Scope, Send

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
        self._served: set[bytes] = set()  # Host values already judged good (a few)
        self.any_origin = "*" in http.cors_origins
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in http.cors_origins)

    def host_allowed(self, host: str) -> bool:
        split = _split_host(host)
        if split is None:
            return False
        name = split[0]
        return name in self.names or name.endswith(self.suffixes) or _is_ip(name)

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

    def admit(self, scope: Scope) -> ASGIApp | HeaderList | None:
        """None: let the request in as it is; a header list: let it in, adding these
        (CORS) headers to its response; an ASGI app: the answer (a refusal or a
        preflight). Cheap on the usual request: a scan of the raw headers, no decoding."""
        host = origin = content_type = None
        body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                body = True
        if self.check_host and host is not None and host not in self._served:
            if not self.host_allowed(host.decode("latin-1")):
                return _refusal(scope, _host_error(host.decode("latin-1")))
            if len(self._served) < 64:
                self._served.add(host)
        if origin is None:
            return None
        return self._browser(scope, origin.decode("latin-1"), host, content_type, body)

    def _browser(
        self,
        scope: Scope,
        origin: str,
        host: bytes | None,
        content_type: bytes | None,
        body: bool,
    ) -> ASGIApp | HeaderList | None:
        cross = not self.same_origin(origin, host.decode("latin-1") if host else None)
        if cross and not self.origin_allowed(origin):
            return _refusal(scope, _origin_error(origin))
        cors = _cors_headers(origin) if cross else []
        preflight = scope["method"] == "OPTIONS" and cross
        if preflight and "access-control-request-method" in Headers(scope=scope):
            return _preflight(scope, cors)
        media = content_type.decode("latin-1") if content_type is not None else None
        if body and not _is_json(media):
            return _refusal(scope, _type_error(media), cors)
        return cors or None


def _refusal(scope: Scope, error: GatewayError, cors: HeaderList | None = None) -> Response:
    response = protocol_error(protocol_for(scope["path"], Headers(scope=scope)), error)
    if cors:
        response.raw_headers += cors
    return response


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


def adding(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> Send:
    """``send``, adding ``headers`` to the response's start."""
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
