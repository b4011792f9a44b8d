"""The base of every public request body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A public request's body. A parameter it does not define is refused with a 400
    (`parameter_unknown`, as Stripe refuses one) rather than ignored, so that a misspelt field
    never leaves a request doing something other than what was meant."""

    model_config = ConfigDict(extra="forbid")
