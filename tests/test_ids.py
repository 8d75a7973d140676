"""Random ids from a pooled read of the OS's random source (tokenrelay/ids.py)."""

from __future__ import annotations

import os
import re

from tokenrelay import ids


def test_ids_have_the_shape_of_secrets_tokens_and_do_not_repeat() -> None:
    hexes = [ids.token_hex(12) for _ in range(5000)]  # more than one pool's worth
    assert all(re.fullmatch(r"[0-9a-f]{24}", h) for h in hexes)
    assert len(set(hexes)) == len(hexes)
    urls = [ids.token_urlsafe(18) for _ in range(500)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", u) for u in urls)
    assert len(ids.random_bytes(10_000)) == 10_000  # larger than the pool


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    ids.token_hex(4)  # the pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, ids.token_hex(16).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child != ids.token_hex(16)  # the parent's next id is not the child's
