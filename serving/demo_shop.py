"""The demo shop's order API: Lumen & Loom's pretend order system, which the bot's actions call over HTTP.

Served at /demo-shop by the app in local mode, so actions work end to end without a real shop; the orders are
generated from a fixed seed, invented like everything else in the demo pack. Cancelling (within 2 hours of
ordering) and changing the delivery address (before shipping) change the shop's own copy of the orders, which
lasts as long as the app runs; a change sent again with the same Idempotency-Key is answered, not redone.
"""

import hmac
import random
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

MOUNT_PATH = "/demo-shop"
_FIRST = ["maya", "liam", "sofia", "noah", "aisha", "lucas", "emma", "omar", "chloe", "mateo", "hana", "ethan"]
_LAST = ["chen", "okafor", "rossi", "novak", "garcia", "kim", "dubois", "singh", "larsen", "silva", "moreau", "patel"]
_CARRIERS = ["UPS", "USPS", "FedEx", "DHL Express"]
TODAY = date(2026, 11, 30)  # the demo shop's "today": the seeded dates stay the same whenever it runs
# The shop's clock starts at noon of its "today" and then runs in real time, so orders placed this morning can be
# cancelled for a while after the app starts (CANCEL_WITHIN), and older ones never.
OPENS_AT = datetime(TODAY.year, TODAY.month, TODAY.day, 12, 0)
CANCEL_WITHIN = timedelta(hours=2)
# Processing orders placed "this morning", minutes before OPENS_AT: every third one.
_RECENT_EVERY = 3


# One order of the demo shop as its API returns it.
class Order(BaseModel):
    order_number: str
    customer_email: str
    customer_name: str
    status: str
    items: list[str]
    placed_on: str
    placed_at: str  # ISO date and time; cancelling is allowed within CANCEL_WITHIN of it
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
            placed_at=f"{placed.isoformat()}T10:00",
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
    processing = [order for order in orders.values() if order.status == "processing"]
    for position, order in enumerate(processing):
        if position % _RECENT_EVERY == 0:
            placed_at = OPENS_AT - timedelta(minutes=20 + 7 * position)
        else:
            placed_at = datetime.fromisoformat(order.placed_on).replace(hour=9) - timedelta(days=1)
        order.placed_on, order.placed_at = placed_at.date().isoformat(), placed_at.isoformat(timespec="minutes")
    return orders


def shop_clock() -> Callable[[], datetime]:
    """The demo shop's "now": OPENS_AT when called first, then advancing in real time."""
    started = time.monotonic()
    return lambda: OPENS_AT + timedelta(seconds=time.monotonic() - started)


# Whose order a change is for: the shop checks it, as it would for its own website.
class Owner(BaseModel):
    customer_email: str


# The new delivery address a customer asks for.
class AddressChange(Owner):
    shipping_address: Annotated[str, Field(min_length=8, max_length=200)]


def create_demo_shop(
    api_key: str, orders: dict[str, Order] | None = None, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """The order API, each call with `Authorization: Bearer <api_key>`; 404 for an unknown order (or, for a change,
    one whose e-mail is not the one given), 409 with the reason when the order can no longer be changed.

    GET /orders/{number}; POST /orders/{number}/cancel and /orders/{number}/address, with an Idempotency-Key."""
    known = orders if orders is not None else seeded_orders()
    now = clock or shop_clock()
    done: dict[str, tuple[int, dict]] = {}  # Idempotency-Key -> the answer the change got
    lock = threading.Lock()
    shop = FastAPI(title="Lumen & Loom demo order API", version="0.2.0")

    def authorised(authorization: str) -> None:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key")

    def owned(order_number: str, email: str) -> Order:
        order = known.get(order_number.upper())
        if order is None or order.customer_email.casefold() != email.strip().casefold():
            raise HTTPException(status_code=404, detail="no such order")
        return order

    def once(key: str, order_number: str, email: str, change: Callable[[Order], None]) -> JSONResponse:
        """Apply `change` to the customer's own order once per Idempotency-Key; a repeat gets the first answer."""
        if not key:
            return JSONResponse({"detail": "an Idempotency-Key header is required"}, status_code=400)
        with lock:
            replayed = key in done
            if not replayed:
                try:
                    order = owned(order_number, email)
                    change(order)
                    done[key] = (200, order.model_dump())
                except HTTPException as refusal:
                    done[key] = (refusal.status_code, {"detail": refusal.detail})
            status, body = done[key]
        return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": str(replayed).lower()})

    @shop.get("/orders/{order_number}")
    def get_order(order_number: str, authorization: Annotated[str, Header()] = "") -> Order:
        authorised(authorization)
        order = known.get(order_number.upper())
        if order is None:
            raise HTTPException(status_code=404, detail="no such order")
        return order

    def cancel_order(order: Order) -> None:
        if order.status != "processing":
            raise HTTPException(status_code=409, detail=_not_cancellable(order))
        placed_at = datetime.fromisoformat(order.placed_at)
        if now() - placed_at > CANCEL_WITHIN:
            raise HTTPException(
                status_code=409,
                detail=f"orders can be cancelled within 2 hours of ordering, and order {order.order_number} was "
                f"placed on {order.placed_on} at {placed_at:%H:%M}",
            )
        order.status, order.cancelled_on = "cancelled", now().date().isoformat()

    @shop.post("/orders/{order_number}/cancel")
    def cancel(
        order_number: str, owner: Owner, authorization: Annotated[str, Header()] = "",
        idempotency_key: Annotated[str, Header()] = "",
    ) -> JSONResponse:  # fmt: skip
        authorised(authorization)
        return once(idempotency_key, order_number, owner.customer_email, cancel_order)

    @shop.post("/orders/{order_number}/address")
    def change_address(
        order_number: str, body: AddressChange, authorization: Annotated[str, Header()] = "",
        idempotency_key: Annotated[str, Header()] = "",
    ) -> JSONResponse:  # fmt: skip
        authorised(authorization)

        def readdress(order: Order) -> None:
            if order.status != "processing":
                raise HTTPException(
                    status_code=409,
                    detail=f"order {order.order_number} has already {_past(order.status)}, so its address can no "
                    "longer be changed",
                )
            order.shipping_address = " ".join(body.shipping_address.split())

        return once(idempotency_key, order_number, body.customer_email, readdress)

    return shop


def _past(status: str) -> str:
    return {"shipped": "shipped", "delivered": "been delivered", "cancelled": "been cancelled"}.get(status, status)


def _not_cancellable(order: Order) -> str:
    if order.status == "cancelled":
        return f"order {order.order_number} is already cancelled"
    return f"order {order.order_number} has already {_past(order.status)}, so it can no longer be cancelled"
