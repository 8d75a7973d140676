"""The shipped Kubernetes manifests and compose file, checked as what a cluster and
compose would read (no cluster here): the readiness probe asks /health on the port the
image serves, SIGTERM has time for the configured drain, the master key comes from the
Secret, and the ConfigMap's configuration loads with the gateway's own loader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.image import read as read_image

from tokenrelay.config import load

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# After the drain: the producers' 5 s and uvicorn's graceful 5 s (server/run.py).
AFTER_DRAIN = 10


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["kind"] not in found, f"one {doc['kind']} only"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    kinds = manifests()
    assert set(kinds) == {"Deployment", "Service", "Secret", "ConfigMap"}
    return kinds


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def config_in(k8s: dict[str, dict[str, Any]], tmp_path: Path) -> Path:
    """The ConfigMap's file where the pod sees it, written out for the loader."""
    c = container(k8s)
    path = Path(env_of(c)["TOKENRELAY_CONFIG"]["value"])
    mount = next(m for m in c["volumeMounts"] if path.is_relative_to(m["mountPath"]))
    volume = next(
        v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )  # fmt: skip
    assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    text = k8s["ConfigMap"]["data"][str(path.relative_to(mount["mountPath"]))]
    out = tmp_path / path.name
    out.write_text(text)
    return out


def test_readiness_asks_health_on_the_port_the_image_serves(k8s: dict[str, Any]) -> None:
    c = container(k8s)
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[probe["port"]] == int(read_image().env["TOKENRELAY_PORT"])
    service = k8s["Service"]["spec"]
    assert (
        service["selector"].items()
        <= k8s["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert all(p["targetPort"] in ports for p in service["ports"])


def test_sigterm_has_time_for_the_configured_drain(k8s: dict[str, Any], tmp_path: Path) -> None:
    secret = k8s["Secret"]["stringData"]
    refs = {n: e["valueFrom"] for n, e in env_of(container(k8s)).items() if "valueFrom" in e}
    env = {name: secret[ref["secretKeyRef"]["key"]] for name, ref in refs.items()}
    config = load(config_in(k8s, tmp_path), env)  # the gateway's own loader and checks
    assert config.master_key == secret["master-key"]
    assert config.redis_url == secret["redis-url"]
    assert config.database_url == secret["database-url"]
    pre_stop = container(k8s)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + config.shutdown_drain + AFTER_DRAIN


def test_the_master_key_comes_from_the_secret(k8s: dict[str, Any]) -> None:
    env = env_of(container(k8s))
    name = k8s["Secret"]["metadata"]["name"]
    for var in ("TOKENRELAY_MASTER_KEY", "TOKENRELAY_DATABASE_URL", "TOKENRELAY_REDIS_URL"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == name and ref["key"] in k8s["Secret"]["stringData"]
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert k8s["Deployment"]["spec"]["replicas"] >= 2


def test_compose_runs_replicas_on_shared_postgres_and_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    gateways = [s for n, s in services.items() if n.startswith("tokenrelay-")]
    assert len(gateways) == 2 and {"postgres", "redis", "nginx"} <= set(services)
    drain = load(None, {}).shutdown_drain
    for gw in gateways:
        env = gw["environment"]
        assert env["TOKENRELAY_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:" in env["TOKENRELAY_DATABASE_URL"]
        assert env["TOKENRELAY_REDIS_URL"].startswith("redis://redis:")
        assert "TOKENRELAY_MASTER_KEY" in env
        assert int(gw["stop_grace_period"].rstrip("s")) >= drain + AFTER_DRAIN
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert "proxy_buffering off;" in nginx
    upstreams = set(re.findall(r"server (tokenrelay-\w+):8000;", nginx))
    assert upstreams == {n for n in services if n.startswith("tokenrelay-")}
