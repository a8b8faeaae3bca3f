#!/usr/bin/env python3
"""The import a user would write instead of sluice, for `just bench` to
measure sluice against: asyncio with aiohttp and asyncpg, 16 downloads at
once, 4 connections, each file COPYed as it came (CSV, no row parsed in
Python) into a temporary table and upserted (`INSERT ... ON CONFLICT DO
NOTHING`) in one transaction.

It is a good script, not a straw man: it leaves the parsing to PostgreSQL,
reads each file whole only because each is small, and is idempotent (run it twice, the rows are the same). What it
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
            "CREATE TEMP TABLE staging (id BIGINT, amount NUMERIC) ON COMMIT DELETE ROWS"
        )

    pool = await asyncpg.create_pool(
        args.dsn, min_size=args.connections, max_size=args.connections, init=staging
    )
    downloads = asyncio.Semaphore(args.downloads)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:

        async def one(account_id: int, url: str) -> int:
            async with downloads:
                async with http.get(urljoin(args.accounts_url, url)) as response:
                    response.raise_for_status()
                    body = await response.read()
            # The file goes to PostgreSQL as it came: no row is touched in Python.
            async with pool.acquire() as db:
                async with db.transaction():
                    status = await db.copy_to_table(
                        "staging",
                        source=io.BytesIO(body),
                        columns=["id", "amount"],
                        format="csv",
                        header=True,
                    )
                    await db.execute(
                        "INSERT INTO transactions SELECT $1, id, amount FROM staging"
                        " ON CONFLICT DO NOTHING",
                        account_id,
                    )
            return int(status.split()[-1])

        async with http.get(args.accounts_url) as response:
            response.raise_for_status()
            accounts = csv.reader(io.StringIO(await response.text()))
        next(accounts)
        rows = sum(
            await asyncio.gather(*(one(int(account), url) for account, url in accounts))
        )
    seconds = time.monotonic() - started
    await pool.close()
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    asyncio.run(main())
