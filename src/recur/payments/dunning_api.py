"""HTTP endpoints of dunning: the tenant's retry schedule for failed renewal charges."""

from __future__ import annotations

from fastapi import APIRouter

from recur.kit.http import RuntimeDep, TenantId
from recur.payments import dunning
from recur.payments.schemas import DunningSettings, DunningSettingsUpdate

router = APIRouter(prefix="/v1/dunning-settings", tags=["dunning"])


@router.get("", response_model=DunningSettings)
async def get_dunning_settings(tenant_id: TenantId, rt: RuntimeDep) -> DunningSettings:
    """The retry schedule: days after a renewal's failed charge, and what follows the last."""
    return await dunning.get_settings(rt, tenant_id)


@router.post("", response_model=DunningSettings)
async def update_dunning_settings(
    params: DunningSettingsUpdate, tenant_id: TenantId, rt: RuntimeDep
) -> DunningSettings:
    """Change the retry schedule; records under way follow it from their next retry."""
    return await dunning.update_settings(rt, tenant_id, params)
