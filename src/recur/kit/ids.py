"""Prefixed, time-ordered object ids (`cus_01J...`).

Written by hand rather than taken from a ULID package because Recur needs two properties
together: a Stripe-style prefix and strict monotonic order within one process, which cursor
pagination (`starting_after`) relies on when many objects are made in the same millisecond.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: sorts as its numbers do
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


# Two characters at a time: the bill run makes ids by the hundred thousand.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def _encode(value: int, length: int) -> str:
    """`value` in `length` (even) base32 characters."""
    pairs = []
    for _ in range(length // 2):
        value, digits = divmod(value, 1024)
        pairs.append(_PAIRS[digits])
    return "".join(reversed(pairs))


def new_id(prefix: str) -> str:
    """A new id such as `cus_01JD3...`: 48 bits of milliseconds, then 80 bits random/counter."""
    global _last_ms, _last_rand
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_rand += 1
        else:
            _last_rand = int.from_bytes(os.urandom(10)) >> 1  # headroom for the counter
        _last_ms = now_ms
        return f"{prefix}_{_encode(now_ms << 80 | _last_rand, 26)}"
