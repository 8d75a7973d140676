"""The model catalog and the choice of a deployment for each attempt.

Names are ``provider/model`` (``local/echo``, ``openai/gpt-4o-mini``,
``myvllm/llama-3.1-8b``). A bare name listed by exactly one provider is accepted too.
A configured model (``models:`` in the config) is a name served by several weighted
deployments, with fallback models tried when every deployment failed.

Choice: among the deployments not yet tried for this request and not taken out by
their health rule (``health.py``: out after N failures within a window, one test
request after a cooldown), the one with the fewest requests in flight per unit of weight
(ties drawn in proportion to weight); a bare name several providers list is one model
whose deployments are those providers, each with its provider's weight; but a request that belongs to a conversation goes to the
healthy deployment its conversation ranks first (``affinity.py``), so the provider's
prompt cache keeps serving it. A deployment that is out is kept out of retries and
fallbacks too; only when every candidate of the plan is out does a request try one of
them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from .affinity import Conversation
from .events import GatewayError
from .health import Health, HealthRules
from .limits.base import Limits
from .providers.base import Provider


@dataclass(slots=True)
class Timeouts:
    """Seconds; ``None`` means no limit."""

    connect: float | None = 10.0
    first_token: float | None = 600.0
    idle: float | None = 120.0
    total: float | None = 1800.0

    def merged(self, override: Timeouts | None) -> Timeouts:
        if override is None:
            return self
        return Timeouts(
            override.connect if override.connect is not None else self.connect,
            override.first_token if override.first_token is not None else self.first_token,
            override.idle if override.idle is not None else self.idle,
            override.total if override.total is not None else self.total,
        )


@dataclass(slots=True, eq=False)
class Deployment:
    """One upstream model on one provider; its health is shared by every request."""

    provider: Provider
    model: str  # the name the upstream knows
    breaker: Health = field(default_factory=Health)
    in_flight: int = 0
    cooling_until: float = 0.0  # an upstream's Retry-After

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass(slots=True, eq=False)
class Candidate:
    """A deployment as one configured model name uses it."""

    deployment: Deployment
    weight: float
    timeouts: Timeouts
    images: bool = True
    limits: Limits | None = None  # its channel's (rpm, concurrency), checked per attempt


@dataclass(slots=True, eq=False)
class Plan:
    """The candidates one request may try, in order of preference: the model's own
    deployments, then each fallback model's."""

    model: str
    groups: list[list[Candidate]]
    tried: list[Candidate] = field(default_factory=list)
    last: Candidate | None = None
    conversation: Conversation | None = None

    def next(self) -> Candidate | None:
        """The candidate for the next attempt. In preference order: an untried healthy
        candidate (in by its health rule, not cooling down after a Retry-After) of the
        first group that has one; else an untried one that is in but cooling down; else,
        only when no candidate of the plan is in, any untried one. Once every candidate
        was tried, a new round begins (the caller bounds the attempts). Within a group:
        the fewest requests in flight per unit of weight, ties drawn by weight."""
        groups = self.groups
        if len(groups) == 1 and len(groups[0]) == 1 and not self.tried:
            # One deployment, no fallback: the common case, whatever its health
            self.last = groups[0][0]
            self.tried.append(self.last)
            return self.last
        if all(c in self.tried for group in self.groups for c in group):
            self.tried.clear()
        now = time.monotonic()
        none_in = all(c.deployment.breaker.out for group in self.groups for c in group)
        for level in (0, 1, 2):
            if level == 2 and not none_in:
                break
            for group in self.groups:
                pool = [
                    c
                    for c in group
                    if c not in self.tried
                    and (
                        level == 2
                        or (
                            c.deployment.breaker.allows()
                            and (level == 1 or c.deployment.cooling_until <= now)
                        )
                    )
                ]
                talk = self.conversation
                if pool and level == 0 and talk is not None and len(pool) > 1 and talk.key:
                    choice = max(pool, key=lambda c: talk.score(c.deployment.name, c.weight))
                    self.tried.append(choice)
                    self.last = choice
                    return choice
                if pool:
                    best = min(c.deployment.in_flight / c.weight for c in pool)
                    least = [c for c in pool if c.deployment.in_flight / c.weight == best]
                    # a draw by weight among the least loaded: idle deployments share
                    # one-at-a-time traffic in proportion to their weights
                    choice = random.choices(least, [c.weight for c in least])[0]
                    self.tried.append(choice)
                    self.last = choice
                    return choice
        return None


def not_found(model: str) -> GatewayError:
    return GatewayError(
        "not_found",
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


@dataclass(slots=True)
class ModelSpec:
    """A configured model name: its deployments (as names) and fallbacks."""

    deployments: list[tuple[str, float | None]]  # (name, weight; None: its provider's)
    fallbacks: list[str] = field(default_factory=list)
    timeouts: Timeouts | None = None
    images: bool | None = None
    affinity: bool = True  # conversations kept on one deployment


class Router:
    def __init__(
        self,
        providers: list[Provider],
        timeouts: dict[str, Timeouts] | None = None,
        models: dict[str, ModelSpec] | None = None,
        breaker: tuple[float, ...] = (5, 30.0),
        text_only: set[str] | None = None,
        weights: dict[str, float] | None = None,
        limits: dict[str, Limits] | None = None,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self._weights = weights or {}  # per provider (channel): its default weight
        self._limits = limits or {}  # per provider (channel): what it may be sent
        self._timeouts = timeouts or {}
        self._models = models or {}
        failures, cooldown, *window = breaker  # (failures, cooldown[, window])
        self.health = HealthRules(int(failures), cooldown, window[0] if window else 60.0)
        self._text_only = text_only or set()  # providers that take no images
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._carried: dict[tuple[str, str], Health] = {}  # from the router this one replaced
        self._groups: dict[str, list[Candidate]] = {}  # model name -> its candidates
        self._bare: dict[str, list[Provider]] = {}
        for p in providers:
            for m in p.models():
                if m != "*":
                    self._bare.setdefault(m, []).append(p)

    def _resolve(self, name: str) -> list[tuple[Provider, str]]:
        """The (provider, upstream model) pairs a name means: ``provider/model``, else
        every provider that lists the bare name (404 if none does)."""
        prefix, sep, rest = name.partition("/")
        provider = self.providers.get(prefix) if sep else None
        if (
            provider is not None
            and rest
            and ("*" in provider.models() or rest in provider.models())
        ):
            return [(provider, rest)]
        owners = self._bare.get(name, [])
        if not owners:
            raise not_found(name)
        return [(p, name) for p in owners]

    def _candidates(
        self,
        name: str,
        weight: float | None,
        override: Timeouts | None,
        images: bool | None = None,
    ) -> list[Candidate]:
        return [
            self._candidate(provider, rest, weight, override, images)
            for provider, rest in self._resolve(name)
        ]

    def _candidate(
        self,
        provider: Provider,
        rest: str,
        weight: float | None,
        override: Timeouts | None,
        images: bool | None,
    ) -> Candidate:
        if weight is None:
            weight = self._weights.get(provider.name, 1.0)
        key = (provider.name, rest)
        deployment = self._deployments.get(key)
        if deployment is None:
            health = self._carried.pop(key, None) or Health(self.health, f"{provider.name}/{rest}")
            health.rules = self.health
            deployment = self._deployments[key] = Deployment(provider, rest, health)
        timeouts = self._timeouts.get(provider.name, Timeouts()).merged(override)
        if images is None:
            images = provider.name not in self._text_only
        return Candidate(deployment, weight, timeouts, images, self._limits.get(provider.name))

    def _group(self, model: str) -> list[Candidate]:
        """The candidates of a model name, worked out once (they are not changed; each
        request's ``Plan`` keeps its own record of what it tried)."""
        group = self._groups.get(model)
        if group is None:
            if len(self._groups) >= 4096:  # names pass through to "*" providers: bounded
                self._groups.clear()
            group = self._groups[model] = self._new_group(model)
        return group

    def _new_group(self, model: str) -> list[Candidate]:
        spec = self._models.get(model)
        if spec is None:
            return self._candidates(model, None, None)
        group = []
        for name, weight in spec.deployments:
            try:
                group.extend(self._candidates(name, weight, spec.timeouts, spec.images))
            except GatewayError:
                continue  # on a channel not served now (disabled, deleted): the others serve
        return group

    def plan(
        self, model: str, images: bool = False, conversation: Conversation | None = None
    ) -> Plan:
        """The deployments to try for ``model``; 404 if the name is unknown, 400 if the
        request has images and none of them takes images. ``conversation``: the one the
        request belongs to, for affinity (its key is worked out only if a choice is made)."""
        groups = [self._group(model)]
        spec = self._models.get(model)
        for fallback in spec.fallbacks if spec else ():
            try:
                groups.append(self._group(fallback))
            except GatewayError:
                continue  # a fallback on a channel not served now
        groups = [g for g in groups if g]
        if not groups:
            raise not_found(model)
        if images:
            groups = [[c for c in g if c.images] for g in groups]
            groups = [g for g in groups if g]
            if not groups:
                raise GatewayError(
                    "invalid_request",
                    f"The model '{model}' does not accept images (its deployments are text-only).",
                    code="images_not_supported",
                    param="messages",
                )
        if spec is not None and not spec.affinity:
            conversation = None
        return Plan(model, groups, conversation=conversation)

    def carry_health(self, old: Router) -> None:
        """Keep the health of ``old``'s deployments whose provider this router serves
        unchanged (the same object: a channel not edited), so a live change elsewhere
        neither brings an out deployment back nor forgets its recent failures."""
        same = {n for n, p in old.providers.items() if self.providers.get(n) is p}
        self._carried = {k: h for k, h in old._carried.items() if k[0] in same}
        self._carried.update({k: d.breaker for k, d in old._deployments.items() if k[0] in same})

    def deployments(self) -> list[Deployment]:
        return list(self._deployments.values())

    def listed(self) -> list[tuple[str, str]]:
        """``(model id, owner)`` for every configured and explicitly listed model."""
        names = [(name, "tokenrelay") for name in self._models]
        names += [
            (f"{p.name}/{m}", p.name)
            for p in self.providers.values()
            for m in p.models()
            if m != "*"
        ]
        return names

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
