"""How many workers ``tokenrelay serve`` starts when not told, and when it refuses."""

from __future__ import annotations

import os
from pathlib import Path

from tokenrelay.config import Config, load
from tokenrelay.server import workers


def load_with(tmp_path: Path, text: str) -> Config:
    path = tmp_path / f"c{len(text)}.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\nenv_providers: false\n" + text)
    return load(str(path))


def test_one_per_core_with_redis_one_without(tmp_path: Path) -> None:
    shared = load_with(tmp_path, "redis_url: redis://127.0.0.1:1/0\n")
    alone = load_with(tmp_path, "")
    assert workers.default_workers(shared) == workers.usable_cores()
    assert workers.default_workers(alone) == 1
    assert workers.refusal(alone, 1) is None
    assert workers.refusal(shared, 4) is None
    why = workers.refusal(alone, 2)
    assert why is not None and "redis_url" in why
    assert workers.refusal(shared, 0) is not None


def test_usable_cores_is_the_affinity_capped_by_a_cgroup_quota() -> None:
    cores = len(os.sched_getaffinity(0))
    found = workers.usable_cores()
    assert 1 <= found <= cores
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):  # no cgroup v2 quota here: the affinity alone counts
        quota, period = "max", "100000"
    if quota == "max":
        assert found == cores
    else:
        assert found == max(1, min(cores, -(-int(quota) // int(period))))
