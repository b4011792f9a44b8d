"""Orders through the HTTP API: totals, gapless numbers, lifecycle, bad input, tenants, lists."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]


async def list_orders(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/orders", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- creating -------------------------------------------------------------------------------


async def test_order_totals_and_lines(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(
        customer["id"],
        lines=[
            {"description": "Seats", "unit_amount": 1250, "quantity": 3},
            {"description": "Setup fee", "unit_amount": 5000},
        ],
        description="Spring order",
    )
    assert order["id"].startswith("ord_")
    assert order["object"] == "order"
    assert order["customer_id"] == customer["id"]
    assert order["subscription_id"] is None
    assert order["currency"] == "USD"
    assert [
        (li["kind"], li["quantity"], li["unit_amount"], li["amount"]) for li in order["lines"]
    ] == [
        ("one_off", 3, 1250, 3750),
        ("one_off", 1, 5000, 5000),
    ]
    assert all(li["currency"] == "USD" for li in order["lines"])
    assert order["subtotal"] == order["total"] == 8750
    assert order["amount_paid"] == 0
    assert order["amount_due"] == 8750
    assert order["status"] == "open"
    assert order["number"] == 1
    assert order["finalized_at"] is not None
    assert order["paid_at"] is None
    assert order["description"] == "Spring order"

    fetched = await api.get(f"/v1/orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order


async def test_customer_without_currency_adopts_the_orders(api, make_customer, make_order) -> None:
    customer = await make_customer()
    order = await make_order(customer["id"], currency="eur")
    assert order["currency"] == "EUR"
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["currency"] == "EUR"
    # Later orders default to it.
    assert (await make_order(customer["id"]))["currency"] == "EUR"


async def test_zero_total_order_is_paid_at_once(make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"], unit_amount=0, quantity=5)
    assert order["total"] == 0
    assert order["status"] == "paid"
    assert order["number"] == 1
    assert order["paid_at"] is not None
    assert order["amount_due"] == 0


async def test_numbers_are_gapless_per_tenant(api, other_tenant, make_customer, make_order) -> None:
    ours = await make_customer(currency="USD")
    theirs = await make_customer(client=other_tenant.client, currency="USD")
    numbers = [(await make_order(ours["id"]))["number"] for _ in range(3)]
    their_numbers = [
        (await make_order(theirs["id"], client=other_tenant.client))["number"] for _ in range(2)
    ]
    assert numbers == [1, 2, 3]
    assert their_numbers == [1, 2]
    # A rejected order takes no number.
    bad = await api.post(
        "/v1/orders",
        json={
            "customer_id": ours["id"],
            "currency": "JPY",
            "lines": [{"description": "x", "unit_amount": 1}],
        },
    )
    assert bad.status_code == 400
    assert (await make_order(ours["id"]))["number"] == 4


async def test_draft_has_no_number_until_finalized(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    draft = await make_order(customer["id"], auto_finalize=False)
    assert draft["status"] == "draft"
    assert draft["number"] is None
    assert draft["finalized_at"] is None
    assert draft["amount_due"] == 1000
    finalized_first = await make_order(customer["id"])
    assert finalized_first["number"] == 1

    response = await api.post(f"/v1/orders/{draft['id']}/finalize")
    assert response.status_code == 200, response.text
    finalized = response.json()
    assert finalized["status"] == "open"
    assert finalized["number"] == 2
    assert finalized["finalized_at"] is not None

    again = await api.post(f"/v1/orders/{draft['id']}/finalize")
    assert_error(again, 409, "state_conflict", None)
    assert (await api.get(f"/v1/orders/{draft['id']}")).json()["number"] == 2


async def test_finalizing_a_zero_draft_pays_it(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    draft = await make_order(customer["id"], unit_amount=0, auto_finalize=False)
    assert draft["status"] == "draft"
    finalized = (await api.post(f"/v1/orders/{draft['id']}/finalize")).json()
    assert finalized["status"] == "paid"
    assert finalized["number"] == 1


# --- lifecycle ------------------------------------------------------------------------------


async def test_void_open_and_draft_orders(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    for auto_finalize in (True, False):
        order = await make_order(customer["id"], auto_finalize=auto_finalize)
        response = await api.post(f"/v1/orders/{order['id']}/void")
        assert response.status_code == 200, response.text
        voided = response.json()
        assert voided["status"] == "void"
        assert voided["voided_at"] is not None
        assert voided["amount_due"] == 0
        assert voided["number"] == order["number"]
        assert_error(await api.post(f"/v1/orders/{order['id']}/void"), 409, "state_conflict", None)
        for action in ("finalize", "mark-uncollectible"):
            assert_error(
                await api.post(f"/v1/orders/{order['id']}/{action}"), 409, "state_conflict", None
            )


async def test_mark_uncollectible(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"])
    response = await api.post(f"/v1/orders/{order['id']}/mark-uncollectible")
    assert response.status_code == 200, response.text
    written_off = response.json()
    assert written_off["status"] == "uncollectible"
    assert written_off["marked_uncollectible_at"] is not None
    assert written_off["amount_due"] == 1000  # can still be paid
    for action in ("mark-uncollectible", "void", "finalize"):
        assert_error(
            await api.post(f"/v1/orders/{order['id']}/{action}"), 409, "state_conflict", None
        )

    draft = await make_order(customer["id"], auto_finalize=False)
    assert_error(
        await api.post(f"/v1/orders/{draft['id']}/mark-uncollectible"), 409, "state_conflict", None
    )
    paid = await make_order(customer["id"], unit_amount=0)
    for action in ("mark-uncollectible", "void", "finalize"):
        assert_error(
            await api.post(f"/v1/orders/{paid['id']}/{action}"), 409, "state_conflict", None
        )


# --- bad input ------------------------------------------------------------------------------

LINE = {"description": "Widget", "unit_amount": 100, "quantity": 1}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"currency": "USD"}, "parameter_invalid", "lines"),
        ({"lines": []}, "parameter_invalid", "lines"),
        ({"lines": [{**LINE, "unit_amount": -1}]}, "parameter_invalid", "lines.0.unit_amount"),
        ({"lines": [{**LINE, "unit_amount": "100"}]}, "parameter_invalid", "lines.0.unit_amount"),
        ({"lines": [{**LINE, "unit_amount": 1.5}]}, "parameter_invalid", "lines.0.unit_amount"),
        ({"lines": [{**LINE, "quantity": "2"}]}, "parameter_invalid", "lines.0.quantity"),
        ({"lines": [{**LINE, "quantity": 0}]}, "parameter_invalid", "lines.0.quantity"),
        ({"lines": [{**LINE, "description": ""}]}, "parameter_invalid", "lines.0.description"),
        ({"lines": [LINE], "currency": "XYZ"}, "invalid_request", "currency"),
        ({"lines": [LINE], "currency": "XAU"}, "invalid_request", "currency"),
        ({"lines": [LINE], "currency": "EUR"}, "currency_mismatch", "currency"),
        ({"lines": [{**LINE, "unit_amount": 2**63}]}, "invalid_request", "lines.0.unit_amount"),
        (
            {"lines": [{**LINE, "unit_amount": 2**62, "quantity": 2}]},
            "invalid_request",
            "lines.0",
        ),
        ({"lines": [{**LINE, "unit_amount": 2**62}] * 2}, "invalid_request", "lines"),
        ({"lines": [LINE], "auto_finalize": "maybe"}, "parameter_invalid", "auto_finalize"),
    ],
)
async def test_bad_input_is_rejected_and_creates_nothing(
    api, make_customer, body, code, param
) -> None:
    customer = await make_customer(currency="USD")
    response = await api.post("/v1/orders", json={"customer_id": customer["id"], **body})
    assert_error(response, 400, code, param)
    assert (await list_orders(api))["data"] == []
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["currency"] == "USD"


async def test_customer_without_currency_needs_one(api, make_customer) -> None:
    customer = await make_customer()
    response = await api.post("/v1/orders", json={"customer_id": customer["id"], "lines": [LINE]})
    assert_error(response, 400, "invalid_request", "currency")
    # A rejected order leaves the customer's currency unset.
    response = await api.post(
        "/v1/orders",
        json={"customer_id": customer["id"], "currency": "USD", "lines": [{**LINE, "quantity": 0}]},
    )
    assert response.status_code == 400
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["currency"] is None
    assert (await list_orders(api))["data"] == []


async def test_unknown_customer_is_404(api) -> None:
    response = await api.post("/v1/orders", json={"customer_id": "cus_nope", "lines": [LINE]})
    assert_error(response, 404, "resource_missing", "customer_id")
    assert (await list_orders(api))["data"] == []


async def test_malformed_json_is_400(api) -> None:
    response = await api.post(
        "/v1/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_order_is_404(api) -> None:
    assert_error(await api.get("/v1/orders/ord_nope"), 404, "resource_missing", "order_id")


async def test_bad_list_filters_are_400(api) -> None:
    assert_error(
        await api.get("/v1/orders", params={"status": "lost"}), 400, "parameter_invalid", "status"
    )
    assert_error(
        await api.get("/v1/orders", params={"limit": 0}), 400, "parameter_invalid", "limit"
    )


# --- tenants --------------------------------------------------------------------------------


async def test_another_tenants_order_is_404_everywhere(
    api, other_tenant, make_customer, make_order
) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"])
    draft = await make_order(customer["id"], auto_finalize=False)
    theirs = other_tenant.client
    for order_id in (order["id"], draft["id"]):
        assert_error(
            await theirs.get(f"/v1/orders/{order_id}"), 404, "resource_missing", "order_id"
        )
        assert_error(
            await theirs.get(f"/v1/orders/{order_id}/invoice"), 404, "resource_missing", "order_id"
        )
        for action in ("finalize", "void", "mark-uncollectible"):
            assert_error(
                await theirs.post(f"/v1/orders/{order_id}/{action}"),
                404,
                "resource_missing",
                "order_id",
            )
    # Nor can it order for our customer, or see our orders in its lists.
    response = await theirs.post(
        "/v1/orders", json={"customer_id": customer["id"], "lines": [LINE]}
    )
    assert_error(response, 404, "resource_missing", "customer_id")
    assert (await list_orders(theirs))["data"] == []
    assert (await list_orders(theirs, customer_id=customer["id"]))["data"] == []
    # Ours are untouched.
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "open"
    assert (await api.get(f"/v1/orders/{draft['id']}")).json()["status"] == "draft"


# --- lists ----------------------------------------------------------------------------------


async def test_list_pagination_newest_first(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    made = [await make_order(customer["id"], unit_amount=100 * (i + 1)) for i in range(5)]
    newest_first = [o["id"] for o in reversed(made)]

    page = await list_orders(api, limit=2)
    assert page["object"] == "list"
    assert [o["id"] for o in page["data"]] == newest_first[:2]
    assert page["has_more"] is True
    assert page["data"][0]["lines"][0]["amount"] == 500

    page = await list_orders(api, limit=2, starting_after=page["data"][-1]["id"])
    assert [o["id"] for o in page["data"]] == newest_first[2:4]
    assert page["has_more"] is True

    page = await list_orders(api, limit=2, starting_after=page["data"][-1]["id"])
    assert [o["id"] for o in page["data"]] == newest_first[4:]
    assert page["has_more"] is False

    page = await list_orders(api)
    assert [o["id"] for o in page["data"]] == newest_first
    assert page["has_more"] is False


async def test_list_filters(api, make_customer, make_order) -> None:
    alice = await make_customer(currency="USD")
    bob = await make_customer(currency="USD")
    a1 = await make_order(alice["id"])
    a2 = await make_order(alice["id"], auto_finalize=False)
    b1 = await make_order(bob["id"])
    await api.post(f"/v1/orders/{b1['id']}/void")

    def ids(page: dict[str, Any]) -> list[str]:
        return [o["id"] for o in page["data"]]

    assert ids(await list_orders(api, customer_id=alice["id"])) == [a2["id"], a1["id"]]
    assert ids(await list_orders(api, customer_id=bob["id"])) == [b1["id"]]
    assert ids(await list_orders(api, status="draft")) == [a2["id"]]
    assert ids(await list_orders(api, status="void")) == [b1["id"]]
    assert ids(await list_orders(api, status="open", customer_id=alice["id"])) == [a1["id"]]
    assert ids(await list_orders(api, status="paid")) == []
    assert ids(await list_orders(api, subscription_id="sub_none")) == []
