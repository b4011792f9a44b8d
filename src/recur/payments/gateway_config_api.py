"""HTTP endpoints of a tenant's payment gateways and routing rules."""

from __future__ import annotations

from fastapi import APIRouter

from recur.kit.http import RuntimeDep, TenantId
from recur.kit.pagination import Limit, Page, StartingAfter
from recur.payments import gateway_config, routing_rules
from recur.payments.gateway_config_schemas import (
    Gateway,
    GatewayCreate,
    GatewayUpdate,
    RoutingRule,
    RoutingRuleCreate,
    RoutingRuleUpdate,
)

gateway_router = APIRouter(prefix="/v1/gateways", tags=["gateways"])
routing_router = APIRouter(prefix="/v1/routing-rules", tags=["gateways"])


@gateway_router.post("", response_model=Gateway)
async def create_gateway(params: GatewayCreate, tenant_id: TenantId, rt: RuntimeDep) -> Gateway:
    """Configure a gateway with the tenant's credentials at it, kept encrypted and never
    returned (409 `credentials_key_missing` when the server has no key to encrypt them)."""
    return await gateway_config.create_gateway(rt, tenant_id, params)


@gateway_router.get("", response_model=Page[Gateway])
async def list_gateways(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[Gateway]:
    return await gateway_config.list_gateways(rt, tenant_id, limit, starting_after)


@gateway_router.get("/{gateway_id}", response_model=Gateway)
async def get_gateway(gateway_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Gateway:
    return await gateway_config.get_gateway(rt, tenant_id, gateway_id)


@gateway_router.post("/{gateway_id}", response_model=Gateway)
async def update_gateway(
    gateway_id: str, params: GatewayUpdate, tenant_id: TenantId, rt: RuntimeDep
) -> Gateway:
    """Replace the credentials, or enable or disable the gateway (a disabled one is skipped
    by every route)."""
    return await gateway_config.update_gateway(rt, tenant_id, gateway_id, params)


@gateway_router.delete("/{gateway_id}", response_model=Gateway)
async def delete_gateway(gateway_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Gateway:
    """Forget the gateway and its credentials (409 while a routing rule names it)."""
    return await gateway_config.delete_gateway(rt, tenant_id, gateway_id)


@routing_router.post("", response_model=RoutingRule)
async def create_routing_rule(
    params: RoutingRuleCreate, tenant_id: TenantId, rt: RuntimeDep
) -> RoutingRule:
    """A rule: payments matching its conditions go to its gateways in order, or to one drawn
    by its split. Rules are tried by priority, lowest first; the first that matches decides."""
    return await routing_rules.create_rule(rt, tenant_id, params)


@routing_router.get("", response_model=Page[RoutingRule])
async def list_routing_rules(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[RoutingRule]:
    """The rules in the order they are tried."""
    return await routing_rules.list_rules(rt, tenant_id, limit, starting_after)


@routing_router.get("/{rule_id}", response_model=RoutingRule)
async def get_routing_rule(rule_id: str, tenant_id: TenantId, rt: RuntimeDep) -> RoutingRule:
    return await routing_rules.get_rule(rt, tenant_id, rule_id)


@routing_router.post("/{rule_id}", response_model=RoutingRule)
async def update_routing_rule(
    rule_id: str, params: RoutingRuleUpdate, tenant_id: TenantId, rt: RuntimeDep
) -> RoutingRule:
    return await routing_rules.update_rule(rt, tenant_id, rule_id, params)


@routing_router.delete("/{rule_id}", response_model=RoutingRule)
async def delete_routing_rule(rule_id: str, tenant_id: TenantId, rt: RuntimeDep) -> RoutingRule:
    return await routing_rules.delete_rule(rt, tenant_id, rule_id)
