"""Faults the sandbox can be told to inject: latency, timeouts, retriable failures.

A tenant's sandbox settings (its gateway credentials, `{"faults": {...}}`) or a test
(`SandboxGateway(clock, faults=SandboxFaults(...))`) turn them on; by default there are none.

Each idempotency key has one fate, fixed by a hash of the key and `seed`: a retry with the same
key meets the same fault, as a real gateway replays its first answer to a key. A share
`timeout_share` of the keys time out; of those, a share `charged_on_timeout_share` were charged
before the answer was lost, the others never arrived, and `lookup_charge` tells which. A share
`failure_share` fail with a retriable error and are never charged. So a fault run is the same
run every time, and "no order charged twice" can be checked against the sandbox's own truth.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operation = Literal["charge", "refund"]


class Fate(StrEnum):
    """What the sandbox does with one call."""

    ANSWER = "answer"
    FAIL = "fail"  # a retriable error; nothing was done
    TIMEOUT_DONE = "timeout_done"  # done, but the answer was lost
    TIMEOUT_LOST = "timeout_lost"  # the request never arrived


class SandboxFaults(BaseModel):
    """How the sandbox misbehaves; every field is off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_seconds: float = Field(default=0.0, ge=0, le=30, description="Added to every call")
    timeout_share: float = Field(default=0.0, ge=0, le=1, description="Keys that time out")
    failure_share: float = Field(default=0.0, ge=0, le=1, description="Keys failing retriably")
    charged_on_timeout_share: float = Field(
        default=0.5, ge=0, le=1, description="Of the timed-out keys, those charged all the same"
    )
    timeout_after_seconds: float = Field(
        default=0.0, ge=0, le=60, description="How long a timing-out call waits before failing"
    )
    operations: frozenset[Operation] = Field(
        default=frozenset({"charge"}), description="The calls the faults apply to"
    )
    seed: str = Field(default="", max_length=64, description="Another seed, other fates")

    @model_validator(mode="after")
    def _shares_fit(self) -> SandboxFaults:
        if self.timeout_share + self.failure_share > 1:
            raise ValueError("timeout_share and failure_share add up to more than 1")
        return self

    @property
    def active(self) -> bool:
        return self.timeout_share > 0 or self.failure_share > 0

    def fate(self, operation: Operation, idempotency_key: str) -> Fate:
        """The one fate of `idempotency_key` for `operation`."""
        if operation not in self.operations or not self.active:
            return Fate.ANSWER
        draw = _fraction(self.seed, operation, idempotency_key)
        if draw < self.timeout_share:
            if _fraction(self.seed, "charged", idempotency_key) < self.charged_on_timeout_share:
                return Fate.TIMEOUT_DONE
            return Fate.TIMEOUT_LOST
        if draw < self.timeout_share + self.failure_share:
            return Fate.FAIL
        return Fate.ANSWER


def _fraction(seed: str, salt: str, key: str) -> float:
    """A number in [0, 1) fixed by its inputs, spread evenly over keys."""
    digest = hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
