"""Must NOT pass mypy: a state-changing call without its idempotency key.

`cargo xtask clients` runs mypy on this file and requires it to fail on line 9, the call.
"""

from ordo_client import Client
from ordo_client.api.order import place_order
from ordo_client.models import OrderCreate
place_order.sync(client=Client(base_url="http://127.0.0.1:8080"), body=OrderCreate(sku="s", quantity=1, account="a", amount=1))
