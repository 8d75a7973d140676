"""Routing: one parsed request in, one planned reply (and its log record) out.

Pure apart from the state it owns (the log, the per-model attempt counters, caches of
recorded files and of precomputed stream plans); the server turns replies into bytes on
the wire. Nothing here blocks except reading a fixture file the first time it is used.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import msgspec

from ..stops import cut_at_stop
from . import counting, extras, keys, scenes, wire
from .cache_counts import NO_CACHE, CacheCounts
from .httpio import Reply, Request, RequestRecord
from .model_list import model_list
from .options import Script, ScriptError, parse_model
from .plan import BAD_UTF8, End, StreamPlan, build_plan, read_replay, split_events
from .prefix_cache import PrefixCache, upstream_key
from .responses_wire import responses_body, responses_scene
from .wire import Proto

__all__ = ["Router"]

_GEMINI = re.compile(
    r"/(?:v1beta|v1|v1alpha)/models/(?P<model>.+)"
    r":(?P<method>streamGenerateContent|generateContent|countTokens|batchEmbedContents)"
    r"(?:\?(?P<query>.*))?",
    re.S,
)
_CHAT_PATHS: dict[str, Proto] = {
    "/v1/chat/completions": "openai",
    "/chat/completions": "openai",
    "/v1/messages": "anthropic",
    "/messages": "anthropic",
    "/v1/responses": "responses",
    "/responses": "responses",
}
_COUNT_PATHS = ("/v1/messages/count_tokens", "/messages/count_tokens")
_EXTRA_PATHS = ("/v1/embeddings", "/embeddings", "/v1/completions", "/completions")
_MODEL_LIST_PATHS = ("/v1/models", "/models", "/v1beta/models")
_CACHE_LIMIT = 1024
_decode = msgspec.json.decode


class Router:
    """The state of one fake upstream and the routes that use it."""

    def __init__(self, fixtures: Path | None, log_limit: int = 10_000) -> None:
        self.fixtures = fixtures
        self.log: list[RequestRecord] = []
        self.log_limit = log_limit
        self.attempts: dict[str, int] = {}
        self.requests = 0
        self.per_key: dict[str, int] = {}  # requests per key (by its last 4 characters)
        self.events_sent = 0
        self._scripts: dict[str, Script] = {}
        self._files: dict[tuple[str, str], list[bytes]] = {}
        self._plans: dict[tuple[Any, ...], StreamPlan] = {}
        self._ids = itertools.count(1)
        self._created = int(time.time())
        self.prefix_cache = PrefixCache()
        self.healed = False  # POST /_fake/heal: failing options succeed

    def reset(self) -> None:
        """Forget the log and the ``fail_times`` counters; failing options fail again."""
        self.log.clear()
        self.attempts.clear()
        self.per_key.clear()
        self.healed = False

    def record(self, entry: RequestRecord) -> None:
        """Append to the log, dropping the oldest half when it outgrows ``log_limit``."""
        if self.log_limit <= 0:
            return
        self.log.append(entry)
        if len(self.log) > self.log_limit:
            del self.log[: len(self.log) - self.log_limit // 2]

    # --- dispatch ---------------------------------------------------------------------

    def handle(self, req: Request) -> tuple[Reply, RequestRecord | None]:
        """The reply to ``req`` and the record to log (``None`` for ``/_fake`` routes)."""
        target = req.url.decode("latin-1")
        gemini = _GEMINI.fullmatch(target)
        if gemini is not None:
            path = (
                target[: gemini.start("query") - 1] if gemini.group("query") is not None else target
            )
            query = gemini.group("query") or ""
        else:
            path, _, query = target.partition("?")
        if path.startswith("/_fake/"):
            return self._control(req.method, path), None
        self.requests += 1
        record = RequestRecord(req.method, path, query, req.headers, None, req.started)
        proto: Proto = "gemini" if gemini is not None else _CHAT_PATHS.get(path, "openai")
        if path in _COUNT_PATHS:
            proto = "anthropic"
        key = keys.key_of(req.headers, query)
        refused = None
        if key is not None:
            record.key = keys.tag(key)
            self.per_key[record.key] = self.per_key.get(record.key, 0) + 1
            refused = keys.refusal(key)
        if path in _EXTRA_PATHS or (
            gemini is not None and gemini["method"] == "batchEmbedContents"
        ):
            reply = self._extra(req, path, record, gemini is not None)
        elif gemini is not None or path in _CHAT_PATHS or path in _COUNT_PATHS:
            if refused is not None:
                status, retry_after = refused
                reply = _error(proto, status, f"fake upstream: key {record.key} refused ({status})")
                if retry_after is not None:
                    reply.headers = [*reply.headers, ("retry-after", retry_after)]
            elif req.method != "POST":
                reply = _error(proto, 405, f"{req.method} is not allowed on {path}; use POST")
            else:
                reply = self._chat(req, proto, record, gemini)
        elif path in _MODEL_LIST_PATHS:
            reply = model_list(path, req.headers, self.fixtures, self._created)
        else:
            reply = _error("openai", 404, f"no route {req.method} {path} on the fake upstream")
        record.status = reply.status
        return reply, record

    def _control(self, method: str, path: str) -> Reply:
        if path == "/_fake/log" and method == "GET":
            return Reply(body=wire.encode_json([r.to_json() for r in self.log]), log=False)
        if path == "/_fake/log" and method == "DELETE":
            self.reset()
            return Reply(body=b'{"cleared":true}', log=False)
        if path == "/_fake/keys" and method == "GET":
            return Reply(body=wire.encode_json(self.per_key), log=False)
        if path == "/_fake/stats" and method == "GET":
            stats = {
                "cpu_seconds": time.process_time(),
                "requests": self.requests,
                "events_sent": self.events_sent,
            }
            return Reply(body=wire.encode_json(stats), log=False)
        if path in ("/_fake/heal", "/_fake/break") and method == "POST":
            self.healed = path == "/_fake/heal"
            return Reply(body=wire.encode_json({"healed": self.healed}), log=False)
        if path == "/_fake/health" and method == "GET":
            return Reply(body=b'{"ok":true}', log=False)
        return Reply(**_error_fields("openai", 404, f"no control route {method} {path}"), log=False)

    def _extra(self, req: Request, path: str, record: RequestRecord, gemini: bool) -> Reply:
        """Embeddings (both shapes) and legacy completions (``extras.py``)."""
        try:
            body = _decode(req.body) if req.body else None
        except msgspec.DecodeError as exc:
            return _error("gemini" if gemini else "openai", 400, f"not valid JSON: {exc}")
        if req.method != "POST" or not isinstance(body, dict):
            return _error("openai", 400, f"POST a JSON object to {path}")
        record.body = body
        named = unquote(target_model) if (target_model := _gemini_model(req)) else body.get("model")
        if isinstance(named, str):
            record.model = named
            failure = self._extra_failure(named, "gemini" if gemini else "openai")
            if failure is not None:
                return failure
        if gemini:
            return extras.gemini_batch_embed(body)
        if path.endswith("/embeddings"):
            return extras.openai_embeddings(body)
        return extras.completions(body, f"cmpl-fake{next(self._ids)}")

    def _extra_failure(self, model: str, proto: Proto) -> Reply | None:
        """A model name's ``status=`` / ``fail_times=`` / ``fail_rate=`` on these routes too (other
        options and names that are not scripts are ignored here)."""
        try:
            script = self._script(model)
        except ScriptError:
            return None
        count = self.attempts[model] = self.attempts.get(model, 0) + 1
        if script.fails and not self.healed and script.fails_at(count):
            return self._failure(script, proto)
        return None

    # --- chat ---------------------------------------------------------------------------

    def _chat(
        self, req: Request, proto: Proto, record: RequestRecord, gemini: re.Match[str] | None
    ) -> Reply:
        try:
            body = _decode(req.body) if req.body else None
        except msgspec.DecodeError as exc:
            return _error(proto, 400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(proto, 400, "request body must be a JSON object")
        record.body = body
        if gemini is not None:
            model = unquote(gemini.group("model"))
            stream = gemini.group("method") == "streamGenerateContent"
        else:
            named = body.get("model")
            if not isinstance(named, str):
                return _error(proto, 400, "'model' is required and must be a string")
            model = named
            stream = body.get("stream") is True
        record.model = model
        if (gemini is not None and gemini.group("method") == "countTokens") or (
            gemini is None and req.url.decode("latin-1").partition("?")[0] in _COUNT_PATHS
        ):
            return Reply(body=counting.count_body(proto, body))
        try:
            script = self._script(model)
            reply = self._serve(
                script, proto, body, stream, upstream_key(req.headers, record.query)
            )
        except ScriptError as exc:
            return _error(proto, exc.status, exc.message)
        if reply.stream is not None:
            record.plan = (proto, reply.stream.events)
        return reply

    def _script(self, model: str) -> Script:
        script = self._scripts.get(model)
        if script is None:
            script = parse_model(model)
            if len(self._scripts) >= _CACHE_LIMIT:
                self._scripts.clear()
            self._scripts[model] = script
        return script

    def _serve(
        self, script: Script, proto: Proto, body: dict[str, Any], stream: bool, key: str
    ) -> Reply:
        model = script.model
        count = self.attempts[model] = self.attempts.get(model, 0) + 1
        if script.fails and not self.healed and script.fails_at(count):
            return self._failure(script, proto)
        if script.too_long:
            return Reply(status=400, body=counting.too_long_body(proto), model=model)
        cache = NO_CACHE
        if script.cache and script.kind in ("echo", "gen"):
            cache = self.prefix_cache.serve(key, proto, body)
        if not stream:
            return self._plain(script, proto, body, cache)
        request_id = [("x-request-id", f"req_fake{next(self._ids)}")]
        plan = self._stream_plan(script, proto, body, cache)
        return Reply(
            content_type="text/event-stream",
            headers=request_id,
            stream=plan,
            delay=script.ttft,
            head_delay=script.head_after,
            gap=script.gap,
            model=model,
        )

    def _failure(self, script: Script, proto: Proto) -> Reply:
        status = script.status or 500
        if script.body is not None:
            body = script.body.encode()
        else:
            body = wire.error_body(
                proto, status, f"fake upstream failure ({status}) for {script.model}"
            )
        headers = [("retry-after", script.retry_after)] if script.retry_after is not None else []
        return Reply(
            status=status, body=body, headers=headers, delay=script.ttft, model=script.model
        )

    def _texts(self, script: Script, proto: Proto, body: dict[str, Any]) -> list[str]:
        if script.kind == "gen":
            return [f"tok{i} " for i in range(script.n)]
        return wire.split_words(wire.last_user_text(proto, body))

    def _stream_plan(
        self, script: Script, proto: Proto, body: dict[str, Any], cache: CacheCounts
    ) -> StreamPlan:
        if script.kind == "replay":
            key: tuple[Any, ...] = (proto, script.model)
        else:
            usage = _include_usage(body) if proto == "openai" else False
            key = (proto, script.model, usage, wire.prompt_tokens(proto, body))
        # echo and the scenes depend on what the request says: never cached
        cached = script.kind in ("gen", "replay") and not script.limit and not script.cache
        plan = self._plans.get(key) if cached else None
        if plan is not None:
            return plan
        if script.kind == "replay":
            events = self._replay_events(script)
            if script.no_done and events:
                events = events[:-1]
        elif script.kind in ("tools", "think") or script.limit:
            events = self._scene(script, proto, body)
        else:
            events = self._generate(script, proto, body, cache)
        plan = build_plan(events, script, proto)
        if cached:
            if len(self._plans) >= _CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _replay_events(self, script: Script) -> list[bytes]:
        name = (script.provider, script.stem)
        events = self._files.get(name)
        if events is None:
            events = split_events(read_replay(self.fixtures, script))
            self._files[name] = events
        return events

    def _scene(self, script: Script, proto: Proto, body: dict[str, Any]) -> list[bytes]:
        scene = scenes.scene_for(script, proto, body)
        number = next(self._ids)
        if proto == "anthropic":
            return scenes.anthropic_scene(
                scene, ident=f"msg_fake{number}", model=script.model, no_done=script.no_done
            )
        if proto == "gemini":
            return scenes.gemini_scene(
                scene, ident=f"fake{number}", model=script.model, no_done=script.no_done
            )
        if proto == "responses":
            return responses_scene(
                scene,
                ident=f"fake{number}",
                model=script.model,
                created=int(time.time()),
                no_done=script.no_done,
            )
        return scenes.openai_scene(
            scene,
            ident=f"chatcmpl-fake{number}",
            created=int(time.time()),
            model=script.model,
            include_usage=_include_usage(body),
            no_done=script.no_done,
        )

    def _generate(
        self, script: Script, proto: Proto, body: dict[str, Any], cache: CacheCounts
    ) -> list[bytes]:
        texts = self._texts(script, proto, body)
        prompt = wire.prompt_tokens(proto, body)
        number = next(self._ids)
        if proto == "anthropic":
            return wire.anthropic_stream(
                texts,
                ident=f"msg_fake{number}",
                model=script.model,
                prompt=prompt,
                no_done=script.no_done,
                counts=not script.no_usage,
                cache=cache,
            )
        if proto == "gemini":
            return wire.gemini_stream(
                texts,
                ident=f"fake{number}",
                model=script.model,
                prompt=prompt,
                no_done=script.no_done,
                counts=not script.no_usage,
                cache=cache,
            )
        if proto == "responses":
            return responses_scene(
                scenes.Scene(prompt=prompt, texts=texts, cache=cache),
                ident=f"fake{number}",
                model=script.model,
                created=int(time.time()),
                no_done=script.no_done,
            )
        return wire.openai_stream(
            texts,
            ident=f"chatcmpl-fake{number}",
            created=int(time.time()),
            model=script.model,
            prompt=prompt,
            include_usage=_include_usage(body),
            no_done=script.no_done,
            counts=not script.no_usage,
            cache=cache,
        )

    def _plain(
        self, script: Script, proto: Proto, body: dict[str, Any], cache: CacheCounts = NO_CACHE
    ) -> Reply:
        if script.kind == "replay":
            raise ScriptError("replay/* models only stream: send stream=true", 400)
        if script.kind in ("tools", "think"):
            raise ScriptError(f"{script.kind} models only stream: send stream=true", 400)
        texts = self._texts(script, proto, body)
        finish: scenes.Stop = "stop"
        matched: str | None = None
        if script.limit:
            texts, matched = cut_at_stop(texts, scenes.stop_sequences(proto, body))
            cut = scenes.max_output_tokens(proto, body)
            if cut is not None and len(texts) > cut:
                texts, finish, matched = texts[:cut], "length", None
        text = wire.encode_json("".join(texts))
        if script.bad_utf8_at is not None:
            text = text[:1] + BAD_UTF8 + text[1:]
        prompt = wire.prompt_tokens(proto, body)
        number = next(self._ids)
        output = len(texts)
        if script.malformed_at is not None:
            data = b'{"broken'
        elif proto == "responses":
            data = responses_body(
                scenes.Scene(prompt=prompt, texts=texts, stop=finish, cache=cache),
                ident=f"fake{number}",
                model=script.model,
                created=int(time.time()),
            )
        elif proto == "anthropic":
            data = wire.anthropic_body(
                text,
                ident=f"msg_fake{number}",
                model=script.model,
                prompt=prompt,
                output=output,
                finish=finish,
                stop_sequence=matched,
                cache=cache,
            )
        elif proto == "gemini":
            data = wire.gemini_body(
                text,
                ident=f"fake{number}",
                model=script.model,
                prompt=prompt,
                output=output,
                finish=finish,
                cache=cache,
            )
        else:
            data = wire.openai_body(
                text,
                ident=f"chatcmpl-fake{number}",
                created=int(time.time()),
                model=script.model,
                prompt=prompt,
                output=output,
                finish=finish,
                cache=cache,
            )
        end: End = "finish"
        if script.stall_after is not None:
            end = "stall"
        elif script.drop_after is not None:
            end = "drop"
        return Reply(
            body=data, delay=script.ttft, head_delay=script.head_after, end=end, model=script.model
        )


def _gemini_model(req: Request) -> str | None:
    found = _GEMINI.fullmatch(req.url.decode("latin-1"))
    return found.group("model") if found is not None else None


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _error_fields(proto: Proto, status: int, message: str) -> dict[str, Any]:
    return {"status": status, "body": wire.error_body(proto, status, message)}


def _error(proto: Proto, status: int, message: str) -> Reply:
    return Reply(**_error_fields(proto, status, message))
