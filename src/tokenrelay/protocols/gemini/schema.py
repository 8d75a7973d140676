"""JSON Schema -> the Gemini ``Schema`` dialect (an OpenAPI 3.0 subset).

Gemini's ``FunctionDeclaration.parameters`` and ``GenerationConfig.responseSchema`` take
a ``Schema`` object, not JSON Schema: unknown keys (``additionalProperties``,
``$schema``, ``strict``, ``$ref`` ...) are rejected with HTTP 400, ``type`` is a single
value, ``enum`` holds strings only, and string ``format`` is limited to ``enum`` and
``date-time``. :func:`gemini_schema` is the one place that rewrites a client's JSON
Schema into that dialect.

Why not ``parametersJsonSchema`` / ``responseJsonSchema``: the newer fields accept full
JSON Schema, but only on the Gemini API proper and only for recent models; Vertex AI,
older models and Gemini-compatible gateways take only the ``Schema`` dialect, which every
Gemini endpoint understands.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA_KEYS", "gemini_schema"]

SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
"""The keys of the v1beta ``Schema`` message; everything else is dropped."""

_FORMATS = {
    "string": frozenset({"enum", "date-time"}),
    "integer": frozenset({"int32", "int64"}),
    "number": frozenset({"float", "double"}),
}
# keys that _node rewrites itself instead of copying
_REWRITTEN = frozenset(
    {"type", "anyOf", "nullable", "properties", "items", "enum", "format", "minimum", "maximum"}
)
_MAX_REF_DEPTH = 8  # a recursive $ref is cut here and replaced by a bare object


def gemini_schema(schema: Any) -> dict[str, Any]:
    """``schema`` (JSON Schema) rewritten for Gemini, recursively:

    - keys outside :data:`SCHEMA_KEYS` are dropped (``additionalProperties``, ``$schema``,
      ``strict``, ``$id``, ``examples``, ``exclusiveMinimum``, ``not``, ``if`` ...);
    - local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) are inlined, a recursive one is
      cut at depth 8 and becomes ``{"type": "object"}``;
    - ``type: [T, "null"]`` becomes ``type: T, nullable: true``; several non-null types
      become ``anyOf``; a ``{"type": "null"}`` branch of ``anyOf`` becomes ``nullable``;
    - ``oneOf`` becomes ``anyOf``; ``allOf`` is merged into its parent;
    - ``const`` becomes a one-value ``enum``; ``enum`` is kept for strings only;
    - ``format`` is kept only where Gemini accepts it; ``required`` names only listed
      properties; an empty ``properties`` object is removed.
    """
    if not isinstance(schema, dict):
        return {}
    return _node(schema, _defs(schema, {}), 0)


def _defs(node: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    found = {**(node.get("definitions") or {}), **(node.get("$defs") or {})}
    return {**inherited, **found} if found else inherited


def _resolve(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any] | None:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    name = ref.rsplit("/", 1)[-1] if ref.startswith(("#/$defs/", "#/definitions/")) else None
    target = defs.get(name) if name is not None else None
    if not isinstance(target, dict) or depth >= _MAX_REF_DEPTH:
        return None
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    return {**target, **siblings}


def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for sub in node.get("allOf") or ():
        if not isinstance(sub, dict):
            continue
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**(merged.get("properties") or {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*(merged.get("required") or []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _node(raw: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    defs = _defs(raw, defs)
    node = _resolve(raw, defs, depth)
    if node is None:
        return {"type": "object"}
    if node is not raw:
        return _node(node, defs, depth + 1)
    if "allOf" in node:
        node = _merge_all_of(node)
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str) and k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            kind = None
            if kinds:
                out["anyOf"] = [{"type": k} for k in kinds]
    if isinstance(kind, str):
        out["type"] = kind
    for key, value in node.items():
        if key in SCHEMA_KEYS and key not in _REWRITTEN:
            out[key] = value
    props = node.get("properties")
    if isinstance(props, dict):
        kept = {k: _node(v, defs, depth) for k, v in props.items() if isinstance(v, dict)}
        if kept:
            out["properties"] = kept
    items = node.get("items")
    if isinstance(items, dict):
        out["items"] = _node(items, defs, depth)
    for key in ("minimum", "maximum"):
        bound = node.get(key)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            out[key] = bound
    if node.get("nullable") is True:
        out["nullable"] = True
    _enum(node, out)
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    _any_of(node, out, defs, depth)
    required = out.get("required")
    if isinstance(required, list):
        listed = out.get("properties") or {}
        names = [r for r in dict.fromkeys(required) if isinstance(r, str) and r in listed]
        if names:
            out["required"] = names
        else:
            del out["required"]
    return out


def _enum(node: dict[str, Any], out: dict[str, Any]) -> None:
    values = node.get("enum")
    if values is None and "const" in node:
        values = [node["const"]]
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        out["enum"] = values
        out.setdefault("type", "string")


def _any_of(node: dict[str, Any], out: dict[str, Any], defs: dict[str, Any], depth: int) -> None:
    branches = node.get("anyOf")
    if branches is None:
        branches = node.get("oneOf")
    if not isinstance(branches, list):
        return
    kept = []
    for branch in branches:
        if not isinstance(branch, dict):
            continue
        if branch.get("type") == "null" and len(branch) == 1:
            out["nullable"] = True
            continue
        kept.append(_node(branch, defs, depth))
    if len(kept) == 1 and "type" not in out:
        for key, value in kept[0].items():
            out.setdefault(key, value)
    elif kept:
        out["anyOf"] = kept
