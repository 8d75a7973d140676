"""``/admin/channels``: channels (providers) managed live, next to the config file's.

The config file's providers are listed too, marked ``read_only``; they cannot be
changed here. Upstream keys go in (``api_keys``) and never come out: a key is shown by
its id, its last 4 characters and its state (``active``, ``resting`` after a 429,
``disabled`` after a 401/403). Header values are shown masked the same way. Every
change is applied here before the answer and told to the other replicas.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..providers.http import HTTPProvider
from ..providers.keys import mask
from ..store.channels import Channel, ChannelExists, ChannelNotFound, ChannelSpec, ChannelStore
from ..store.secrets import NoSecretKey
from .admin_http import METHODS, AdminGate, Handler, bad_request, error_response, json_response
from .admin_schema import ErrorBody, error_bodies, json_body, schemas_of
from .channels import ChannelRegistry

MAX_BODY = 1024 * 1024
_T = TypeVar("_T")


class ChannelIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    base_url: str
    protocol: str = "openai"
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    headers: dict[str, str] = {}
    timeouts: dict[str, float] = {}
    images: bool = True
    enabled: bool = True
    weight: float = 1.0  # its share of a model other channels serve too
    limits: dict[str, int] = {}  # rpm, max_concurrent
    api_keys: list[str] = []


class ChannelPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str | None = None
    base_url: str | None = None
    protocol: str | None = None
    models: list[str] | None = None
    headers: dict[str, str] | None = None
    timeouts: dict[str, float] | None = None
    images: bool | None = None
    enabled: bool | None = None
    weight: float | None = None
    limits: dict[str, int] | None = None
    api_keys: list[str] | None = None  # given: replaces the channel's keys


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    api_key: str


class KeyOut(msgspec.Struct):
    id: str
    masked: str
    state: str  # active | resting | disabled | "not served" (a disabled channel)
    served: int = 0  # requests sent with it by this replica


class ChannelOut(msgspec.Struct):
    name: str
    source: str  # config | database
    read_only: bool
    protocol: str
    base_url: str
    models: list[str]
    headers: dict[str, str]
    timeouts: dict[str, float]
    images: bool
    enabled: bool
    weight: float
    limits: dict[str, int]
    served: bool  # this replica serves it now
    keys: list[KeyOut]
    id: str | None = None
    problem: str | None = None


class ChannelList(msgspec.Struct):
    data: list[ChannelOut]


class ChannelsAPI(AdminGate):
    def __init__(self, registry: ChannelRegistry, master_key: str | None) -> None:
        super().__init__(None, master_key)
        self.registry = registry

    @property
    def routes(self) -> list[Route]:
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/admin/channels", {"GET": self.list, "POST": self.create}),
            (
                "/admin/channels/{name}",
                {"GET": self.get, "PATCH": self.update, "DELETE": self.delete},
            ),
            ("/admin/channels/{name}/keys", {"POST": self.add_key}),
            ("/admin/channels/{name}/keys/{key_id}", {"DELETE": self.remove_key}),
        ]
        return [Route(p, self.dispatch(h, True), methods=METHODS) for p, h in table]

    def _store(self) -> ChannelStore:
        store = self.registry.store
        assert store is not None  # the dispatcher answered 503 before the store was open
        return store

    # --- views ------------------------------------------------------------------------

    def _keys(self, name: str, known: list[tuple[str, str]]) -> list[KeyOut]:
        made = self.registry.made.get(name)
        provider = made[1] if made is not None else None
        states = {}
        if isinstance(provider, HTTPProvider):
            now = time.monotonic()
            states = {k.id: (k.state(now), k.served) for k in provider.keys.keys}
        return [KeyOut(i, masked, *states.get(i, ("not served", 0))) for i, masked in known]

    def _configured(self) -> list[ChannelOut]:
        out = []
        for p in self.registry.config.providers:
            made = self.registry.made.get(p.name)
            provider = made[1] if made is not None else None
            known = (
                [(k.id, mask(k.secret)) for k in provider.keys.keys]
                if isinstance(provider, HTTPProvider)
                else []
            )
            timeouts = {
                k: v for k, v in msgspec.structs.asdict(p.timeouts).items() if v is not None
            }
            out.append(
                ChannelOut(
                    name=p.name,
                    source="config",
                    read_only=True,
                    protocol=p.protocol,
                    base_url=p.base_url,
                    models=list(p.models),
                    headers={k: mask(v) for k, v in p.headers.items()},
                    timeouts=timeouts,
                    images=p.images,
                    enabled=True,
                    weight=p.weight,
                    limits={
                        k: v for k, v in msgspec.structs.asdict(p.limits).items() if v is not None
                    },
                    served=made is not None,
                    keys=self._keys(p.name, known),
                )
            )
        return out

    def _stored(self, c: Channel) -> ChannelOut:
        s = c.spec
        return ChannelOut(
            name=s.name,
            source="database",
            read_only=False,
            protocol=s.protocol,
            base_url=s.base_url,
            models=list(s.models),
            headers={k: mask(v) for k, v in s.headers.items()},
            timeouts=dict(s.timeouts),
            images=s.images,
            enabled=s.enabled,
            weight=s.weight,
            limits=dict(s.limits),
            served=s.name in self.registry.made and s.name not in self.registry.problems,
            keys=self._keys(s.name, [(k.id, "…" + k.last4) for k in c.keys]),
            id=c.id,
            problem=self.registry.problems.get(s.name),
        )

    def _read_only(self, name: str) -> Response | None:
        if any(p.name == name for p in self.registry.config.providers):
            return error_response(
                409,
                f"The channel '{name}' comes from the config file: it is read-only here.",
                "invalid_request_error",
                "read_only",
            )
        return None

    # --- handlers ---------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        stored = [self._stored(c) for c in await self._store().all()]
        return json_response(ChannelList(data=self._configured() + stored))

    async def get(self, request: Request) -> Response:
        name = request.path_params["name"]
        for c in self._configured():
            if c.name == name:
                return json_response(c)
        try:
            return json_response(self._stored(await self._store().get(name)))
        except ChannelNotFound:
            return _not_found(name)

    async def create(self, request: Request) -> Response:
        given = await _decoded(request, ChannelIn)
        if isinstance(given, Response):
            return given
        if (denied := self._read_only(given.name)) is not None:
            return denied
        fields = msgspec.structs.asdict(given)
        keys = fields.pop("api_keys")
        return await self._apply(self._store().create(ChannelSpec(**fields), keys), 201)

    async def update(self, request: Request) -> Response:
        name = request.path_params["name"]
        if (denied := self._read_only(name)) is not None:
            return denied
        given = await _decoded(request, ChannelPatch)
        if isinstance(given, Response):
            return given
        changes = {k: v for k, v in msgspec.structs.asdict(given).items() if v is not None}
        keys = changes.pop("api_keys", None)
        if "name" in changes and (denied := self._read_only(changes["name"])) is not None:
            return denied
        return await self._apply(self._store().update(name, changes, keys), 200, name)

    async def add_key(self, request: Request) -> Response:
        name = request.path_params["name"]
        if (denied := self._read_only(name)) is not None:
            return denied
        given = await _decoded(request, KeyIn)
        if isinstance(given, Response):
            return given
        return await self._apply(self._store().add_key(name, given.api_key), 201, name)

    async def remove_key(self, request: Request) -> Response:
        name = request.path_params["name"]
        if (denied := self._read_only(name)) is not None:
            return denied
        change = self._store().remove_key(name, request.path_params["key_id"])
        return await self._apply(change, 200, name)

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        if (denied := self._read_only(name)) is not None:
            return denied
        try:
            await self._store().delete(name)
        except ChannelNotFound:
            return _not_found(name)
        await self._changed()
        return Response(status_code=204)

    async def _apply(self, change: Any, status: int, name: str = "") -> Response:
        try:
            channel: Channel = await change
        except ChannelNotFound:
            return _not_found(name)
        except ChannelExists as exc:
            return error_response(409, str(exc), "invalid_request_error", "channel_exists", "name")
        except NoSecretKey as exc:
            return error_response(
                400, str(exc), "invalid_request_error", "secret_key_missing", "api_keys"
            )
        except ValueError as exc:
            return bad_request(str(exc), str(exc).split(":", 1)[0])
        await self._changed()
        return json_response(self._stored(channel), status)

    async def _changed(self) -> None:
        await self.registry.reload()
        self.registry.changed()


def _not_found(name: str) -> Response:
    return error_response(
        404, f"No channel named '{name}'.", "invalid_request_error", "not_found", "name"
    )


async def _decoded(request: Request, kind: type[_T]) -> _T | Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return error_response(
                413, "The body is too large.", "invalid_request_error", "request_too_large"
            )
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        return bad_request(f"Invalid request body: {exc}")
    except msgspec.DecodeError as exc:
        return bad_request(f"The request body is not valid JSON: {exc}")
    except RecursionError:
        return bad_request("The request body is nested too deeply.")


_ERROR_TEXTS = {
    "404": "No such channel (or key)",
    "409": "The channel is the config file's (read-only), or the name is taken",
}


def _openapi() -> dict[str, Any]:
    def body(name: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"required": True, "content": {"application/json": {"schema": ref}}}

    def op(
        op_id: str, summary: str, ok: tuple[str, str, str] | None, *errors: str, **extra: Any
    ) -> Any:
        responses: dict[str, Any] = {} if ok is None else {ok[0]: json_body(ok[1], ok[2])}
        if ok is None:
            responses["204"] = {"description": "Deleted"}
        responses.update(error_bodies(*errors, "401", "403", "503"))
        for status, text in _ERROR_TEXTS.items():
            if status in responses:
                responses[status] = {**responses[status], "description": text}
        return {"operationId": op_id, "summary": summary, "responses": responses, **extra}

    def path(*names: str) -> list[dict[str, Any]]:
        return [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]

    one = ("200", "ChannelOut", "The channel")
    paths = {
        "/admin/channels": {
            "get": op(
                "listChannels",
                "List channels (the config file's read-only)",
                ("200", "ChannelList", "The channels"),
            ),
            "post": op(
                "createChannel",
                "Create a channel",
                ("201", "ChannelOut", "The channel"),
                "400",
                "409",
                "413",
                requestBody=body("ChannelIn"),
            ),
        },
        "/admin/channels/{name}": {
            "get": op("getChannel", "A channel", one, "404", parameters=path("name")),
            "patch": op(
                "updateChannel",
                "Change a channel (api_keys given: they replace its keys)",
                one,
                "400",
                "404",
                "409",
                "413",
                parameters=path("name"),
                requestBody=body("ChannelPatch"),
            ),
            "delete": op(
                "deleteChannel",
                "Delete a channel and its keys",
                None,
                "404",
                "409",
                parameters=path("name"),
            ),
        },
        "/admin/channels/{name}/keys": {
            "post": op(
                "addChannelKey",
                "Add an upstream key",
                ("201", "ChannelOut", "The channel"),
                "400",
                "404",
                "409",
                "413",
                parameters=path("name"),
                requestBody=body("KeyIn"),
            ),
        },
        "/admin/channels/{name}/keys/{key_id}": {
            "delete": op(
                "removeChannelKey",
                "Remove an upstream key",
                one,
                "404",
                "409",
                parameters=path("name", "key_id"),
            ),
        },
    }
    schemas = schemas_of([ChannelIn, ChannelPatch, KeyIn, ChannelOut, ChannelList, ErrorBody])
    return {"paths": paths, "components": {"schemas": schemas}}


CHANNELS_OPENAPI: dict[str, Any] = _openapi()
"""This API's paths and schemas, merged into the admin API's document (``merge_openapi``)."""
