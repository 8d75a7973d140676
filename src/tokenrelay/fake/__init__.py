"""A fake LLM upstream: a real, fast HTTP server that tests and benchmarks use in place
of the providers' hosted APIs.

Routes: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``POST /v1/messages``,
``POST /v1/responses`` (and ``/responses``),
``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` and ``:generateContent``,
``GET /v1/models``; ``GET``/``DELETE /_fake/log`` (the request log as JSON / clear it
and the ``fail_times`` counters), ``POST /_fake/heal`` / ``/_fake/break`` (failing
options succeed / fail again), ``GET /_fake/stats``, ``GET /_fake/health``.

What a response holds is chosen by the model name (for Gemini, the model in the URL):
``echo``, ``gen/<n>``, ``tools``, ``think`` or ``replay/<provider>/<file-stem>``, plus
``?options`` for timing and faults; see ``tokenrelay.fake.options`` for the grammar.

In process::

    upstream = await start(fixtures=path)
    ... requests to upstream.base_url ...
    await upstream.close()

As a process: ``python -m tokenrelay.fake --port 8081 --fixtures DIR``.
"""

from __future__ import annotations

from .httpio import RequestRecord
from .options import Script, ScriptError, parse_model
from .server import FakeUpstream, start

__all__ = ["FakeUpstream", "RequestRecord", "Script", "ScriptError", "parse_model", "start"]
