"""The demo shop's order API: Lumen & Loom's pretend order system, which the bot's actions call over HTTP.

Served at /demo-shop by the app in local mode, so actions work end to end without a real shop; the orders are
generated from a fixed seed, invented like everything else in the demo pack.
"""

import hmac
import random
from datetime import date, timedelta
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

MOUNT_PATH = "/demo-shop"
_FIRST = ["maya", "liam", "sofia", "noah", "aisha", "lucas", "emma", "omar", "chloe", "mateo", "hana", "ethan"]
_LAST = ["chen", "okafor", "rossi", "novak", "garcia", "kim", "dubois", "singh", "larsen", "silva", "moreau", "patel"]
_CARRIERS = ["UPS", "USPS", "FedEx", "DHL Express"]
TODAY = date(2026, 11, 30)  # the demo shop's "today": the seeded dates stay the same whenever it runs


# One order of the demo shop as its API returns it.
class Order(BaseModel):
    order_number: str
    customer_email: str
    customer_name: str
    status: str
    items: list[str]
    placed_on: str
    shipped_on: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    estimated_delivery: str | None = None
    delivered_on: str | None = None
    cancelled_on: str | None = None
    shipping_address: str


def seeded_orders(count: int = 48, seed: int = 104233) -> dict[str, Order]:
    """The demo shop's orders by number, the same on every run: LL-104233 first, statuses mixed."""
    rng = random.Random(seed)
    products = ["desk lamp", "duvet cover", "kettle", "smart plug", "speaker", "towel", "mug", "string lights"]
    orders = {}
    for index in range(count):
        number = f"LL-{104233 + index * 7}"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        status = ["shipped", "processing", "delivered", "cancelled"][index % 4 if index % 9 else 0]
        # Delivered orders were placed long enough ago to have arrived by the shop's "today".
        placed = TODAY - timedelta(days=rng.randint(10, 20) if status == "delivered" else rng.randint(0, 9))
        order = Order(
            order_number=number,
            customer_email=f"{first}.{last}{index}@example.com",
            customer_name=f"{first.title()} {last.title()}",
            status=status,
            items=rng.sample(products, rng.randint(1, 3)),
            placed_on=placed.isoformat(),
            shipping_address=f"{rng.randint(1, 999)} Maple Street, Columbus, OH 43{rng.randint(100, 299)}",
        )
        if status in ("shipped", "delivered"):
            shipped = placed + timedelta(days=rng.randint(1, 2))
            order.shipped_on = shipped.isoformat()
            order.carrier = rng.choice(_CARRIERS)
            order.tracking_number = f"1Z{rng.randint(10**15, 10**16 - 1)}"
            order.estimated_delivery = (shipped + timedelta(days=rng.randint(3, 6))).isoformat()
            if status == "delivered":
                order.delivered_on = order.estimated_delivery
        if status == "cancelled":
            order.cancelled_on = (placed + timedelta(hours=1)).isoformat()
        orders[number] = order
    return orders


def create_demo_shop(api_key: str, orders: dict[str, Order] | None = None) -> FastAPI:
    """The order API: GET /orders/{number} with `Authorization: Bearer <api_key>`; 404 for an unknown order."""
    known = orders if orders is not None else seeded_orders()
    shop = FastAPI(title="Lumen & Loom demo order API", version="0.1.0")

    @shop.get("/orders/{order_number}")
    def get_order(order_number: str, authorization: Annotated[str, Header()] = "") -> Order:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key")
        order = known.get(order_number.upper())
        if order is None:
            raise HTTPException(status_code=404, detail="no such order")
        return order

    return shop
