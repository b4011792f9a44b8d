"""The invoice page: numbers, formatted amounts per currency exponent, escaping, drafts."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("currency", "unit_amount", "quantity", "unit_text", "total_text"),
    [
        ("USD", 1999, 3, "19.99 USD", "59.97 USD"),
        ("JPY", 500, 2, "500 JPY", "1000 JPY"),
        ("KWD", 1234, 2, "1.234 KWD", "2.468 KWD"),
    ],
)
async def test_invoice_shows_number_and_formatted_amounts(
    api, make_customer, make_order, currency, unit_amount, quantity, unit_text, total_text
) -> None:
    customer = await make_customer(
        currency=currency,
        name="Ada Lovelace",
        email="ada@example.com",
        address={
            "line1": "12 Analytical St",
            "city": "London",
            "postal_code": "N1 7AA",
            "country": "GB",
        },
    )
    await make_order(customer["id"])  # so the invoice's number is 2, not a lucky 1
    order = await make_order(
        customer["id"], unit_amount=unit_amount, quantity=quantity, description="Q3 supplies"
    )
    response = await api.get(f"/v1/orders/{order['id']}/invoice")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "<title>Invoice 2</title>" in html
    assert '<dd class="number">2</dd>' in html
    assert "DRAFT" not in html
    assert f">{unit_text}<" in html
    assert html.count(f">{total_text}<") == 4  # line amount, subtotal, total, due
    assert f'Amount due</td><td class="num">{total_text}<' in html
    assert f'Amount paid</td><td class="num">{"0" if currency == "JPY" else "0."}' in html
    for text in (
        "Ada Lovelace",
        "ada@example.com",
        "12 Analytical St",
        "London N1 7AA",
        "GB",
        "Widget",
        "Q3 supplies",
        ">open<",
    ):
        assert text in html


async def test_invoice_escapes_user_input(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD", name="<script>alert('x')</script>")
    order = await make_order(
        customer["id"],
        lines=[{"description": "<img src=x onerror=alert(1)>", "unit_amount": 100}],
    )
    html = (await api.get(f"/v1/orders/{order['id']}/invoice")).text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


async def test_draft_invoice_says_draft_and_has_no_number(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    draft = await make_order(customer["id"], auto_finalize=False)
    html = (await api.get(f"/v1/orders/{draft['id']}/invoice")).text
    assert "DRAFT" in html
    assert "Invoice number" not in html
    assert "<title>Draft invoice</title>" in html
    assert ">10.00 USD<" in html


async def test_invoice_of_a_paid_zero_order(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="KWD")
    order = await make_order(customer["id"], unit_amount=0)
    html = (await api.get(f"/v1/orders/{order['id']}/invoice")).text
    assert ">paid<" in html
    assert "Date paid" in html
    assert ">0.000 KWD<" in html
