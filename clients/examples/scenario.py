"""The first order, through the Python client (openapi-python-client).

Stock and money, an order placed with a key and sent again after a lost answer (the
replay), paid with `If-Match` from its ETag, an event the state does not allow (409,
naming the allowed events), a stale `If-Match` (412), and the order's history. Prints the
end state as one JSON line, the same in every language's scenario.
`cargo xtask clients` generates the client into clients/python and runs:
PYTHONPATH=clients/python python3 clients/examples/scenario.py URL
"""

import json
import sys
import uuid

from ordo_client import Client
from ordo_client.api.inventory import get_inventory, restock_inventory
from ordo_client.api.order import (
    deliver_order,
    get_order_transitions,
    pay_order,
    place_order,
    ship_order,
)
from ordo_client.api.wallet import deposit_wallet, get_wallet
from ordo_client.models import (
    Inventory,
    InventoryRestock,
    Order,
    OrderCreate,
    OrderShip,
    Problem,
    TransitionPage,
    Wallet,
    WalletDeposit,
)
from ordo_client.types import Unset

api = Client(base_url=sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")


def key() -> str:
    """A fresh key for each request (a UUID, as clients send them)."""
    return str(uuid.uuid4())


restock_inventory.sync("sku-1", client=api, body=InventoryRestock(quantity=10), idempotency_key=key())
deposit_wallet.sync("acct-1", client=api, body=WalletDeposit(amount=1000), idempotency_key=key())

# Place an order; its answer is "lost" (a timeout), so it is sent again with the same key:
# the server answers with the first outcome instead of placing a second order.
place_key = key()
order_in = OrderCreate(sku="sku-1", quantity=2, account="acct-1", amount=300)
placed = place_order.sync_detailed(client=api, body=order_in, idempotency_key=place_key)
again = place_order.sync_detailed(client=api, body=order_in, idempotency_key=place_key)
assert isinstance(placed.parsed, Order) and isinstance(again.parsed, Order), placed
assert again.parsed.id == placed.parsed.id, "the replay is the first order"
replayed = again.headers.get("Idempotent-Replayed") == "true"
order_id, etag = placed.parsed.id, placed.headers["ETag"]

# Pay it, on the version we read (an event without parameters needs no body).
paid = pay_order.sync(order_id, client=api, idempotency_key=key(), if_match=etag)
assert isinstance(paid, Order), paid

# Deliver is not allowed from `paid`: a typed 409 that names what is.
refused = deliver_order.sync_detailed(order_id, client=api, idempotency_key=key())
assert refused.status_code == 409 and isinstance(refused.parsed, Problem), refused
allowed = [] if isinstance(refused.parsed.allowed, Unset) else refused.parsed.allowed

# Ship with the version from before paying: 412, and the current version.
stale = ship_order.sync_detailed(
    order_id, client=api, body=OrderShip(carrier="ups"), idempotency_key=key(), if_match=etag
)
assert stale.status_code == 412 and isinstance(stale.parsed, Problem), stale

history = get_order_transitions.sync(order_id, client=api)
stock = get_inventory.sync("sku-1", client=api)
wallet = get_wallet.sync("acct-1", client=api)
assert isinstance(history, TransitionPage) and isinstance(stock, Inventory) and isinstance(wallet, Wallet)
summary = {
    "allowed": allowed,
    "available": stock.available,
    "balance": wallet.balance,
    "history": [t.event for t in history.items],
    "replayed": replayed,
    "stale_current_version": stale.parsed.current_version,
    "state": paid.state.value,
    "version": paid.version,
}
print(json.dumps(summary, separators=(",", ":")))
