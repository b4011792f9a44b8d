"""HTTP endpoints of gateway webhooks, and of operators' marks on manual payments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from recur.kit.http import RuntimeDep, TenantId
from recur.payments import operator_marks, webhooks
from recur.payments.gateways.adyen import NAME as ADYEN
from recur.payments.schemas import OperatorMark, Payment

webhook_router = APIRouter(tags=["gateway webhooks"])
operator_router = APIRouter(tags=["payments"])

WEBHOOK_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Received (or received before): Adyen is answered `[accepted]`"},
    400: {"description": "Not verified by the gateway's signature: nothing is stored"},
}


@webhook_router.post(
    "/v1/gateways/{name}/webhooks", responses=WEBHOOK_ANSWERS, response_class=Response
)
async def receive_gateway_webhook(name: str, request: Request, rt: RuntimeDep) -> Response:
    """A webhook of the gateway `name` (sandbox, stripe, adyen). No API key: it is verified by
    the gateway's own signature, with the credentials of the tenant whose payment it names."""
    receipt = await webhooks.receive_webhook(rt, name, request.headers, await request.body())
    if name == ADYEN:
        # What Adyen expects, or it sends the notification again.
        return PlainTextResponse("[accepted]")
    return JSONResponse({"received": True, "duplicate": receipt.duplicate})


def _operator(request: Request) -> str:
    return str(getattr(request.state, "api_key_id", None) or "api")


@operator_router.post("/v1/payments/{payment_id}/mark-paid", response_model=Payment)
async def mark_paid(
    payment_id: str,
    request: Request,
    tenant_id: TenantId,
    rt: RuntimeDep,
    params: OperatorMark | None = None,
) -> Payment:
    """An operator received the manual payment (bank transfer, cash): it succeeds."""
    return await operator_marks.mark_payment(
        rt, tenant_id, payment_id, paid=True, by=_operator(request), params=params or OperatorMark()
    )


@operator_router.post("/v1/payments/{payment_id}/mark-failed", response_model=Payment)
async def mark_failed(
    payment_id: str,
    request: Request,
    tenant_id: TenantId,
    rt: RuntimeDep,
    params: OperatorMark | None = None,
) -> Payment:
    """An operator gives up on the manual payment (nothing was received): it fails."""
    return await operator_marks.mark_payment(
        rt,
        tenant_id,
        payment_id,
        paid=False,
        by=_operator(request),
        params=params or OperatorMark(),
    )
