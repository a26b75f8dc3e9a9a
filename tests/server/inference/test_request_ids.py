"""Request ids: 48 bits of milliseconds then 80 random bits, unique, and never repeated by a forked worker."""

from __future__ import annotations

import os
import re
import time

from vigil.server.inference.dataplane import new_request_id


def test_ids_are_time_ordered_hex_and_unique() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(5000)]  # more than one pool of random bytes
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids) and len({i[12:] for i in ids}) == len(ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)


def test_a_forked_child_draws_its_own_random_bits() -> None:
    new_request_id()  # the parent's pool holds unused bytes a child would otherwise repeat
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    parent = [new_request_id() for _ in range(3)]
    assert len(child) == 3 and not {c[12:] for c in child} & {p[12:] for p in parent}
