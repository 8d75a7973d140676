"""The model catalog: which provider serves a model name, and under what upstream name.

Names are ``provider/model`` (``local/echo``, ``openai/gpt-4o-mini``,
``myvllm/llama-3.1-8b``). A bare name listed by exactly one provider is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import GatewayError
from .providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str  # the name the upstream knows


class Router:
    def __init__(self, providers: list[Provider]) -> None:
        self.providers = {p.name: p for p in providers}
        self._bare: dict[str, list[Provider]] = {}
        for p in providers:
            for m in p.models():
                if m != "*":
                    self._bare.setdefault(m, []).append(p)

    def resolve(self, model: str) -> Route:
        prefix, sep, rest = model.partition("/")
        provider = self.providers.get(prefix) if sep else None
        if provider is not None and rest:
            served = provider.models()
            if "*" in served or rest in served:
                return Route(provider, rest)
        owners = self._bare.get(model, [])
        if len(owners) == 1:
            return Route(owners[0], model)
        raise GatewayError(
            "not_found",
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    def listed(self) -> list[tuple[str, str]]:
        """``(model id, provider name)`` for every explicitly listed model."""
        return [
            (f"{p.name}/{m}", p.name)
            for p in self.providers.values()
            for m in p.models()
            if m != "*"
        ]

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
