"""`python -m examples.orders` (what `make demo` runs). `MSGKIT_URL` picks the broker,
`ORDERS_DB` the order service's database (default: a temporary SQLite file)."""

import asyncio
import logging
import sys

from examples.orders.flow import run

# msgkit logs the failures it handles; show only errors, in the demo's own column layout.
logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(name)-12s %(message)s")
asyncio.run(run())
