"""What the Dockerfile tells a container runtime: its ENV, ENTRYPOINT, CMD and
HEALTHCHECK, read from the file itself, so a test can run the image's command outside a
container exactly as the image would."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@dataclass
class ImageSpec:
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    workdir: str = ""
    volumes: list[str] = field(default_factory=list)
    user: str = ""
    stopsignal: str = ""


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []
        out.append((word.upper(), rest.strip()))
    return out


def _exec_form(value: str) -> list[str]:
    words = json.loads(value)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), value
    return [str(w) for w in words]


def read(path: Path = DOCKERFILE) -> ImageSpec:
    spec = ImageSpec()
    for word, rest in _instructions(path.read_text(encoding="utf-8")):
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                spec.env[name] = value
        elif word == "ENTRYPOINT":
            spec.entrypoint = _exec_form(rest)
        elif word == "CMD":
            spec.cmd = _exec_form(rest)
        elif word == "HEALTHCHECK":
            spec.healthcheck = _exec_form(rest[rest.index("CMD ") + 4 :])
        elif word == "WORKDIR":
            spec.workdir = rest
        elif word == "VOLUME":
            spec.volumes = _exec_form(rest)
        elif word == "USER":
            spec.user = rest
        elif word == "STOPSIGNAL":
            spec.stopsignal = rest
    return spec
