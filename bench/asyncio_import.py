#!/usr/bin/env python3
"""The import a user would write instead of sluice, for `just bench` to
measure sluice against: asyncio with aiohttp and asyncpg, 16 downloads at
once, 4 connections, each file COPYed into a temporary table and upserted
(`INSERT ... ON CONFLICT DO NOTHING`) in one transaction.

It is a good script, not a straw man: streaming-free only because each
file is small, and idempotent (run it twice, the rows are the same). What it
does not do is what sluice is for: a crash loses its progress and the rerun
downloads everything again; nothing bounds a hostile file; one process.

Prints one JSON line: {"rows": N, "seconds": S}.
"""

import argparse
import asyncio
import csv
import io
import json
import time
from decimal import Decimal
from urllib.parse import urljoin

import aiohttp
import asyncpg


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("accounts_url")
    parser.add_argument("dsn")
    parser.add_argument("--downloads", type=int, default=16)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    async def staging(db: asyncpg.Connection) -> None:
        await db.execute(
            "CREATE TEMP TABLE staging (account_id BIGINT, id BIGINT, amount NUMERIC)"
            " ON COMMIT DELETE ROWS"
        )

    pool = await asyncpg.create_pool(
        args.dsn, min_size=args.connections, max_size=args.connections, init=staging
    )
    downloads = asyncio.Semaphore(args.downloads)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:

        async def get(url: str) -> str:
            async with downloads:
                async with http.get(url) as response:
                    response.raise_for_status()
                    return await response.text()

        async def one(account_id: int, url: str) -> int:
            body = await get(urljoin(args.accounts_url, url))
            reader = csv.reader(io.StringIO(body))
            next(reader)
            records = [(account_id, int(id_), Decimal(amount)) for id_, amount in reader]
            async with pool.acquire() as db:
                async with db.transaction():
                    await db.copy_records_to_table("staging", records=records)
                    await db.execute(
                        "INSERT INTO transactions SELECT * FROM staging ON CONFLICT DO NOTHING"
                    )
            return len(records)

        accounts = csv.reader(io.StringIO(await get(args.accounts_url)))
        next(accounts)
        rows = sum(
            await asyncio.gather(*(one(int(account), url) for account, url in accounts))
        )
    seconds = time.monotonic() - started
    await pool.close()
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    asyncio.run(main())
