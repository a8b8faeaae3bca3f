"""Per-account totals of everything sluice imports, computed beside it from
the TRANSACTIONS stream alone: an example of another consumer of the
contract (shared/messages/schema). It keeps no state but memory, needs no
durable consumer, and never slows the saver down.

    NATS_URL=nats://127.0.0.1:4222 python examples/account_totals.py [--idle SECONDS]

Prints one JSON object, account id -> total, when interrupted (Ctrl-C,
SIGTERM) or after --idle seconds without a new message. It applies the
saver's rules, so its totals equal `SELECT account_id, sum(amount) FROM
transactions GROUP BY account_id` once both have seen the same messages:
a transaction saved once keeps its first amount; within one import, when
an (account, id) repeats, the first in file order wins (accounts-file line,
then transactions-file line, both in the message).
"""

import argparse
import asyncio
import json
import os
import signal
from decimal import Decimal

import nats


def position(msg_id: str, line):
    """(accounts-file line, transactions-file line) of a row, from its
    message id `<import>/<account line>/rows-…` and its `line`."""
    parts = msg_id.split("/")
    try:
        return (int(parts[-2]), int(line))
    except (IndexError, TypeError, ValueError):
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=0, help="exit after this many seconds without a message")
    args = parser.parse_args()
    namespace = os.environ.get("SLUICE_NAMESPACE", "")
    prefix = f"{namespace}." if namespace else ""
    stream = (f"{namespace}_" if namespace else "").replace("-", "_") + "TRANSACTIONS"

    client = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(","))
    js = client.jetstream()
    rows = {}  # (account, id) -> (import id, position, amount)
    last_message = asyncio.get_running_loop().time()

    async def on_message(msg):
        nonlocal last_message
        last_message = asyncio.get_running_loop().time()
        batch = json.loads(msg.data)
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        for t in batch["transactions"]:
            key = (batch["account_id"], t["id"])
            new = (batch["import_id"], position(msg_id, t.get("line")), Decimal(t["amount"]))
            old = rows.get(key)
            if old is None:
                rows[key] = new
            elif old[0] == new[0] and None not in (old[1], new[1]) and new[1] < old[1]:
                rows[key] = new

    # An ordered consumer: every message from the start, in stream order.
    await js.subscribe(f"{prefix}transactions.>", stream=stream, cb=on_message, ordered_consumer=True)

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except asyncio.TimeoutError:
            pass
        if args.idle and asyncio.get_running_loop().time() - last_message > args.idle:
            break
    await client.close()

    totals = {}
    for (account, _), (_, _, amount) in rows.items():
        totals[account] = totals.get(account, Decimal(0)) + amount
    print(json.dumps({str(a): str(t) for a, t in sorted(totals.items())}))


if __name__ == "__main__":
    asyncio.run(main())
