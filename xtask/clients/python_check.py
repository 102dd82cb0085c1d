"""Places an order through the Python client generated from docs/openapi.json.

Run by `cargo xtask test` against a live ordo-server: python3 python_check.py CLIENT_DIR URL
"""

import sys
import uuid

sys.path.insert(0, sys.argv[1])

from ordo_client import Client  # noqa: E402
from ordo_client.api.inventory import restock_inventory  # noqa: E402
from ordo_client.api.order import get_order, pay_order, place_order  # noqa: E402
from ordo_client.models import InventoryRestock, NoParams, Order, OrderCreate, OrderState  # noqa: E402

client = Client(base_url=sys.argv[2])
key = lambda: str(uuid.uuid4())  # noqa: E731

r = restock_inventory.sync_detailed("sku-py", client=client, body=InventoryRestock(quantity=5), idempotency_key=key())
assert r.status_code == 200, r

placed = place_order.sync_detailed(
    client=client,
    body=OrderCreate(sku="sku-py", quantity=2, account="acct-py", amount=0),
    idempotency_key=key(),
)
assert placed.status_code == 201, placed
order = placed.parsed
assert isinstance(order, Order) and order.state == OrderState.PENDING, order

paid = pay_order.sync_detailed(order.id, client=client, body=NoParams(), idempotency_key=key())
assert paid.status_code == 200 and paid.parsed.state == OrderState.PAID, paid

again = get_order.sync_detailed(order.id, client=client)
assert again.parsed.version == 2, again
print(f"python client: order {order.id} placed and paid")
