"""The fake upstream's model list, in each provider's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import wire
from .httpio import Reply


def model_list(path: str, headers: dict[str, str], fixtures: Path | None, created: int) -> Reply:
    """``GET /v1/models`` (OpenAI's shape, or Anthropic's with ``anthropic-version``) and
    ``GET /v1beta/models`` (Gemini's): the generated models and every recording."""
    names = ["echo", "gen/16", "gen/200"]
    data: list[dict[str, Any]]
    if fixtures is not None and fixtures.is_dir():
        names += sorted(f"replay/{p.parent.name}/{p.stem}" for p in fixtures.glob("*/*.sse"))
    if path == "/v1beta/models":
        body: Any = {
            "models": [
                {
                    "name": f"models/{n}",
                    "displayName": n,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
                }
                for n in names
            ]
        }
    elif "anthropic-version" in headers:
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
            for n in names
        ]
        body = {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}
    else:
        data = [
            {
                "id": n,
                "object": "model",
                "created": created,
                "owned_by": "tokenrelay-fake",
            }
            for n in names
        ]
        body = {"object": "list", "data": data}
    return Reply(body=wire.encode_json(body))
