"""Configuration: a YAML file (``--config`` or ``TOKENRELAY_CONFIG``) on top of embedded
defaults, plus every provider whose key is found in the environment.

Secrets are written as ``${ENV}`` (or ``${ENV:-default}``) references and resolved at
load time. A bad file fails at start with a message that names the field.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from .catalog import ENV_PROVIDERS
from .protocols.registry import REGISTRY


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field."""


class TimeoutsConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Seconds; ``None`` (or omitted, on a model) means the provider's value or no limit.
    The defaults suit reasoning models, which may think for minutes before their first
    token (keep-alive pings stop proxies from cutting the wait)."""

    connect: float | None = None  # to open a connection (default 10)
    first_token: float | None = None  # from sending the request to the first token (600)
    idle: float | None = None  # longest silence between two chunks of a stream (120)
    total: float | None = None  # the whole request (1800)


DEFAULT_TIMEOUTS = {"connect": 10.0, "first_token": 600.0, "idle": 120.0, "total": 1800.0}


ENDPOINTS = ("chat", "completions", "embeddings")
"""What a provider may serve (``endpoints:``)."""


class ChannelLimitsConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What one provider (channel) is sent, across every key and model; unset: no limit.
    Counted by the key limits' limiter (memory, or Redis across replicas)."""

    rpm: int | None = None  # requests per minute sent to it
    max_concurrent: int | None = None  # requests in flight on it at once


CHANNEL_LIMITS = ("rpm", "max_concurrent")


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    base_url: str
    protocol: str = "openai"  # an upstream protocol of the registry (checked by parse)
    api_key: str | None = None
    api_keys: list[str] = []  # more upstream keys: requests spread over all of them
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    headers: dict[str, str] = {}
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    images: bool = True  # false: a text-only deployment; requests with images get 400
    weight: float = 1.0  # its share of a model several providers serve (router.py)
    limits: ChannelLimitsConfig = msgspec.field(default_factory=ChannelLimitsConfig)
    # anthropic-beta flags passed on: ["*"] all, names (trailing * = prefix), [] none;
    # unset: all for api.anthropic.com, none elsewhere (providers/betas.py)
    anthropic_betas: list[str] | None = None
    # what it serves: chat, completions (legacy /v1/completions, OpenAI-compatible
    # upstreams only), embeddings; unset: every endpoint its protocol has
    endpoints: list[str] | None = None


class DeploymentConfig(msgspec.Struct, forbid_unknown_fields=True):
    model: str  # a provider/model name
    weight: float | None = None  # unset: its provider's weight


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    """A model name clients use, served by one or more deployments, with fallbacks."""

    name: str
    deployments: list[str | DeploymentConfig] = []  # default: the name itself
    fallbacks: list[str] = []  # other model names tried when every deployment failed
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    images: bool | None = None  # false: text only (default: as its providers say)
    affinity: bool = True  # keep a conversation on one deployment (README: prompt caching)


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_attempts: int = 4  # attempts per request, across deployments and fallbacks
    backoff_base: float = 0.25  # seconds; full jitter: sleep uniform(0, base * 2**n)
    backoff_max: float = 8.0
    retry_after_max: float = 5.0  # longest Retry-After waited for; longer ones go to the client
    breaker_failures: int = 5  # failures within breaker_window that take a deployment out
    breaker_cooldown: float = 30.0  # seconds out before one request (or probe) may test it
    breaker_window: float = 60.0  # seconds a failure counts for (health.py)


class ProbesConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Active probes (server/probes.py): a one-token request to each listed deployment
    that is out past its cooldown or got no traffic for ``interval`` seconds."""

    interval: float = 0.0  # seconds between rounds; 0: no active probes
    keyed: bool = False  # probe providers with an upstream key too (each probe is billed upstream)
    prompt: str = "ping"


class LocalConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    rate: float = 30.0  # deltas per second of local/echo; 0 = as fast as possible


class StreamsConfig(msgspec.Struct, forbid_unknown_fields=True):
    grace: float = 10.0  # seconds an unfinished stream with no reader keeps going; 0 = stop at once
    retention: float = 300.0  # seconds a finished stream stays resumable
    token_ttl: float = 60.0  # seconds a /v1/chat/stream token may start its stream
    max_stream_bytes: int = 8 * 1024 * 1024  # frames kept per stream (oldest dropped first)
    max_total_bytes: int = 256 * 1024 * 1024  # frames kept in all (oldest streams evicted)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: float | str) -> float:
    """A duration: seconds, or a string with a unit (``90s``, ``15m``, ``12h``, ``30d``)."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if m is None:
        raise ValueError(f"{value!r} is not a duration (e.g. 3600, 90m, 12h, 30d)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class ResponsesConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Stored responses (the Responses API's ``store``, ``previous_response_id``,
    background mode), in the database: kept this long (seconds or ``30d``)."""

    retention: float | str = "30d"

    @property
    def retention_seconds(self) -> float:
        return seconds(self.retention)


class UsageConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The usage writer: records leave the request path in batches; while the database
    is away they wait in memory (up to spool_max_rows), then in spill_dir on disk."""

    # An insert's parameters are prepared on the event loop (~20 us a row): 100 rows
    # is a ~2 ms pause for the streams in flight; 500 was ~10 ms (measured).
    batch_size: int = 100
    flush_interval: float = 0.5
    spool_max_rows: int = 100_000
    spill_dir: str = "./tokenrelay-spool"
    retry_max: float = 5.0


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The front door: which Host names and browser origins are served (server/door.py)
    and how much a connection may cost before it has sent a request
    (server/connections.py)."""

    # Host names served besides IP addresses, localhost and the bind host ("*.x.y" for
    # subdomains; "*": any). Checked in open mode, or whenever this lists a name.
    allowed_hosts: list[str] = []
    cors_origins: list[str] = []  # browser origins allowed cross-origin ("*": any)
    max_connections_per_client: int = 256  # open at once from one address; 0: no limit
    uncapped_clients: list[str] = msgspec.field(  # addresses the cap spares (CIDR)
        default_factory=lambda: ["127.0.0.0/8", "::1"]
    )
    max_header_bytes: int = 64 * 1024  # request line and headers; more gets 431
    header_timeout: float = 10.0  # seconds to send a request's headers, from its first byte
    idle_timeout: float = 5.0  # seconds a connection with no request in flight stays open


class Config(msgspec.Struct, forbid_unknown_fields=True):
    providers: list[ProviderConfig] = []
    local: LocalConfig = msgspec.field(default_factory=LocalConfig)
    streams: StreamsConfig = msgspec.field(default_factory=StreamsConfig)
    models: list[ModelConfig] = []
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    keepalive_interval: float = 5.0  # seconds of quiet before a ': ping' comment
    max_body_bytes: int = 32 * 1024 * 1024  # larger request bodies get 413
    shutdown_drain: float = 30.0  # seconds streams may finish after SIGTERM
    starts_per_turn: int = 8  # new requests begun per event-loop turn (server/pacing.py)
    redis_url: str | None = None  # share streams (resume on any replica) and limits
    database_url: str | None = (
        None  # keys and usage: sqlite:///path (default ./tokenrelay.db) or postgresql://
    )
    key_prefix: str | None = None  # of new virtual keys (default sk-; TOKENRELAY_KEY_PREFIX)
    master_key: str | None = None  # administration; without it: open mode (loopback only)
    metrics_token: str | None = None  # a scrape token for /metrics (besides the master key)
    auth_cache_ttl: float = (
        5.0  # seconds a key lookup is cached (a revoke elsewhere: this long, at once via Redis)
    )
    limiter_fail_open: bool = False  # Redis limits unreachable: 503 (false) or let requests in
    prices: dict[str, dict[str, Any]] = {}  # per model: input, output, cached_input (USD per 1M)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    env_providers: bool = True  # add a provider for every known *_API_KEY in the environment
    probes: ProbesConfig = msgspec.field(default_factory=ProbesConfig)
    status_page: bool = True  # GET /status and /status.json: public uptime and latency
    webhook_url: str | None = None  # POSTed JSON events: channel out/back, key disabled, budget


_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def parse(data: Any, env: dict[str, str] | None = None, source: str = "config") -> Config:
    """A configuration from parsed YAML; raises ``ConfigError`` naming the bad field."""
    env = dict(os.environ) if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = _expand(data, "$", env)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        config.responses.retention_seconds  # noqa: B018 (checked here, read later)
    except ValueError as exc:
        raise ConfigError(f"{source}: $.responses.retention: {exc}") from None
    names = set()
    for i, p in enumerate(config.providers):
        where = f"{source}: $.providers[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", p.name):
            raise ConfigError(
                f"{where}.name: {p.name!r} may use only letters, digits, '_', '.', '-'"
            )
        if p.name in names or p.name == "local":
            raise ConfigError(f"{where}.name: {p.name!r} is used twice (or is reserved)")
        names.add(p.name)
        if not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://")
        if not p.models:
            raise ConfigError(f"{where}.models: list at least one model, or '*' for any")
        if p.protocol not in (known := REGISTRY.upstream_names()):
            raise ConfigError(f"{where}.protocol: {p.protocol!r} is not one of {', '.join(known)}")
        for name in p.endpoints or ():
            if name not in ENDPOINTS:
                raise ConfigError(
                    f"{where}.endpoints: {name!r} is not one of {', '.join(ENDPOINTS)}"
                )
        if not p.weight > 0:
            raise ConfigError(f"{where}.weight: must be above 0")
        for name in CHANNEL_LIMITS:
            value = getattr(p.limits, name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.limits.{name}: must be 1 or more")
    for i, m in enumerate(config.models):
        for j, d in enumerate(m.deployments):
            if isinstance(d, DeploymentConfig) and d.weight is not None and not d.weight > 0:
                raise ConfigError(f"{source}: $.models[{i}].deployments[{j}].weight: above 0")
    if config.webhook_url and not config.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: $.webhook_url: must start with http:// or https://")
    for i, network in enumerate(config.http.uncapped_clients):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: $.http.uncapped_clients[{i}]: {network!r} is not an address or CIDR"
            ) from None
    if config.env_providers:
        config.providers.extend(_env_providers(env, names))
    config.key_prefix = config.key_prefix or env.get("TOKENRELAY_KEY_PREFIX") or "sk-"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,11}-", config.key_prefix):
        raise ConfigError(f"{source}: $.key_prefix: {config.key_prefix!r} must look like 'sk-'")
    config.master_key = config.master_key or env.get("TOKENRELAY_MASTER_KEY") or None
    config.database_url = config.database_url or env.get("TOKENRELAY_DATABASE_URL") or None
    config.redis_url = config.redis_url or env.get("TOKENRELAY_REDIS_URL") or None
    return config


def _env_providers(env: dict[str, str], taken: set[str]) -> list[ProviderConfig]:
    found = []
    for spec in ENV_PROVIDERS:
        key = next((env[k] for k in spec.key_vars if env.get(k)), None)
        if key is None or spec.name in taken:
            continue
        base_url = env.get(spec.base_url_var, "") if spec.base_url_var else ""
        found.append(
            ProviderConfig(
                name=spec.name,
                base_url=base_url or spec.base_url,
                protocol=spec.protocol,
                api_key=key,
                models=[*spec.models, "*"],
            )
        )
    return found


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load ``path`` (or ``$TOKENRELAY_CONFIG``, or nothing: the embedded defaults)."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("TOKENRELAY_CONFIG") or None
    if path is None:
        return parse({}, env)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse(data, env, str(file))
