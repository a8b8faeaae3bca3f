"""A second, independent `fetcher` stage for sluice, written only from the
contract (docs/contract.md + shared/messages/schema/). One account update in ->
one transactions CSV streamed -> `transactions.<account_id>` messages (one per
window of N file lines), malformed-row letters, then the `fetched` fact; the
input is acked only after JetStream acked all of that.

Run: NATS_URL=... SLUICE_NAMESPACE=... SLUICE_ALLOW_NETWORKS=... python fetcher.py
"""
import asyncio, base64, contextlib, csv, datetime, gzip, http.client, io, ipaddress, json
import os, random, re, signal, socket, sys, threading, zlib
from urllib.parse import urljoin, urlsplit, urlunsplit
import nats, nats.errors

def die(msg): print(f"fetcher: {msg}", file=sys.stderr); sys.exit(2)

UNITS = {"ms": .001, "s": 1, "m": 60, "h": 3600, "d": 86400,
         "": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
WHAT = {"int": "an integer", "nets": "a comma-separated list of networks (10.0.0.0/8,::1)",
        "dur": "a duration (500ms, 30s, 10m, 7d)", "size": "a size (1048576, 64KiB, 512MiB, 2GB)"}
def setting(name, default, kind):  # a bad value stops the service with one line naming it
    raw = os.environ.get(name, "").strip() or default
    try:
        if kind == "int": return int(raw)
        if kind == "nets": return [ipaddress.ip_network(n.strip()) for n in raw.split(",") if n.strip()]
        num, unit = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", raw).groups()
        if kind == "dur" and unit == "": raise ValueError  # a duration needs its unit
        return float(num) * UNITS[unit.lower()]
    except Exception: die(f"{name}={raw!r} is not {WHAT[kind]}")

DENY_DEFAULT = ("0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,"
                "192.168.0.0/16,198.18.0.0/15,224.0.0.0/3,::/128,::1/128,fc00::/7,fe80::/10,ff00::/8")
NATS_URL = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
NS = os.environ.get("SLUICE_NAMESPACE", "").strip()
SUBJ = f"{NS}." if NS else ""                       # subjects: ns.account-updates
STREAM = (f"{NS}_" if NS else "").replace("-", "_") + "ACCOUNT_UPDATES"
N = setting("SLUICE_TRANSACTIONS_PER_MESSAGE", "250", "int")
CONCURRENCY = setting("SLUICE_CONCURRENCY", "16", "int")
MAX_DELIVERIES = setting("SLUICE_MAX_DELIVERIES", "10", "int")
BACKOFF, BACKOFF_MAX = setting("SLUICE_RETRY_BACKOFF", "1s", "dur"), setting("SLUICE_RETRY_BACKOFF_MAX", "60s", "dur")
SHUTDOWN_TIMEOUT = setting("SLUICE_SHUTDOWN_TIMEOUT", "20s", "dur")
MAX_PROCESSING = setting("SLUICE_MAX_PROCESSING_TIME", "8m", "dur")
CONNECT_TIMEOUT, READ_TIMEOUT = setting("SLUICE_CONNECT_TIMEOUT", "10s", "dur"), setting("SLUICE_READ_TIMEOUT", "30s", "dur")
PUBLISH_WINDOW = setting("SLUICE_PUBLISH_WINDOW", "1MiB", "size")
MAX_DOWNLOAD = setting("SLUICE_MAX_DOWNLOAD_SIZE", "4GiB", "size")
MAX_ROW = int(setting("SLUICE_MAX_ROW_LENGTH", "64KiB", "size"))
MAX_RATIO = setting("SLUICE_MAX_COMPRESSION_RATIO", "100", "size")
DENY, ALLOW = setting("SLUICE_DENY_NETWORKS", DENY_DEFAULT, "nets"), setting("SLUICE_ALLOW_NETWORKS", "", "nets")
if N < 1 or CONCURRENCY < 1 or MAX_DELIVERIES < 1: die("SLUICE_TRANSACTIONS_PER_MESSAGE, SLUICE_CONCURRENCY and SLUICE_MAX_DELIVERIES must be >= 1")
IMPORT_ID = re.compile(r"[A-Za-z0-9_:-]{1,128}")
INT64 = re.compile(r"[+-]?[0-9]+")
AMOUNT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")   # the schema's Amount; <= 60 digits checked apart
csv.field_size_limit(MAX_ROW + 2)

def log(msg): print(f"{datetime.datetime.now().isoformat(timespec='milliseconds')} fetcher: {msg}", file=sys.stderr, flush=True)
def now(): return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
def redact(url):  # for logs and letters: no user info, no query string (either may hold a secret)
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, "", "")) + ("?…" if u.query else "")

class Permanent(Exception): pass   # dead-letter at once
class Transient(Exception): pass   # Nak(delay), then `exhausted`
class Cancelled(Exception): pass   # shutdown: hand the message back

# ---- downloads: only to allowed addresses, pinned to the address we checked ----
def embedded_v4(a):  # the IPv4 hidden in mapped, compatible, NAT64 and 6to4 forms
    if a.version == 4: return None
    if a.ipv4_mapped or a.sixtofour: return a.ipv4_mapped or a.sixtofour
    if int(a) >> 32 == 0 and int(a) > 1 or a in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)
def check_address(ip):
    for a in filter(None, (ipaddress.ip_address(ip), embedded_v4(ipaddress.ip_address(ip)))):
        net = next((n for n in DENY if a.version == n.version and a in n), None)
        if net and not any(a.version == n.version and a in n for n in ALLOW):
            raise Permanent(f"refused to connect to {ip}: {a} is in {net} (SLUICE_DENY_NETWORKS) "
                            f"and not in SLUICE_ALLOW_NETWORKS")

class Pinned:  # connect to the checked address, not to whatever DNS says next time
    def connect(self):
        sock = socket.create_connection((self.ip, self.port), CONNECT_TIMEOUT)
        sock.settimeout(READ_TIMEOUT)  # longest silence while reading
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host) if hasattr(self, "_context") else sock
class PinnedHTTP(Pinned, http.client.HTTPConnection): pass
class PinnedHTTPS(Pinned, http.client.HTTPSConnection): pass

def open_url(url):
    for _ in range(10):  # redirects, each re-checked
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname: raise Permanent(f"{redact(url)}: not an http(s) URL")
        port = u.port or (443 if u.scheme == "https" else 80)
        try: ips = list(dict.fromkeys(i[4][0] for i in socket.getaddrinfo(u.hostname, port, type=socket.SOCK_STREAM)))
        except socket.gaierror as e: raise Transient(f"{redact(url)}: cannot resolve {u.hostname}: {e}")
        for ip in ips: check_address(ip)  # every address must pass, not just the one we use
        conn = (PinnedHTTPS if u.scheme == "https" else PinnedHTTP)(u.hostname, port, timeout=READ_TIMEOUT)
        conn.ip = ips[0]
        headers = {"Accept-Encoding": "gzip", "User-Agent": "sluice-fetcher-py"}
        if u.username is not None:
            cred = f"{u.username}:{u.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        conn.request("GET", urlunsplit(("", "", u.path or "/", u.query, "")), headers=headers)
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            nxt = urljoin(url, resp.getheader("Location")); resp.close()
            if u.scheme == "https" and urlsplit(nxt).scheme == "http": raise Permanent(f"{redact(url)}: redirect from https to http refused")
            url = nxt; continue
        why = f"{redact(url)}: HTTP {resp.status} {resp.reason}"
        if resp.status in (408, 429) or resp.status >= 500: raise Transient(why)
        if resp.status != 200: raise Permanent(why)
        if int(resp.getheader("Content-Length") or 0) > MAX_DOWNLOAD and "gzip" not in (resp.getheader("Content-Encoding") or ""):
            raise Permanent(f"{redact(url)}: Content-Length over SLUICE_MAX_DOWNLOAD_SIZE ({MAX_DOWNLOAD:.0f} bytes)")
        return resp
    raise Permanent(f"{redact(url)}: too many redirects")

class Meter(io.RawIOBase):  # counts bytes through; enforces size and gzip-ratio limits; spots truncation
    def __init__(self, inner, limit=None, raw=None): self.inner, self.n, self.limit, self.raw = inner, 0, limit, raw
    def readable(self): return True
    def readinto(self, b):
        k = self.inner.readinto(b); self.n += k or 0
        if not k and b and getattr(self.inner, "length", None):  # http.client's readinto does not raise on a short body
            raise http.client.IncompleteRead(b"", self.inner.length)
        if self.limit and self.n > self.limit: raise Permanent(f"file over SLUICE_MAX_DOWNLOAD_SIZE ({self.limit:.0f} bytes)")
        if self.raw and self.n > 2**20 and self.n > MAX_RATIO * max(self.raw.n, 1): raise Permanent("gzip body expands more than SLUICE_MAX_COMPRESSION_RATIO")
        return k

def csv_lines(resp):  # physical lines, split on LF only (CRLF ends a line, a lone CR does not)
    raw = Meter(resp)
    body = gzip.GzipFile(fileobj=raw) if "gzip" in (resp.getheader("Content-Encoding") or "").lower() else raw
    buf, first = io.BufferedReader(Meter(body, MAX_DOWNLOAD, raw if body is not raw else None)), True
    while line := buf.readline(MAX_ROW + 3):
        if len(line.rstrip(b"\r\n")) > MAX_ROW: raise Permanent(f"a line is longer than SLUICE_MAX_ROW_LENGTH ({MAX_ROW} bytes)")
        text = line.decode("utf-8", "surrogateescape")  # bad bytes spoil one row, not the file
        if first: text, first = text.removeprefix("\ufeff"), False
        yield text

def blank(row): return len(row) <= 1 and not "".join(row).strip()  # empty or whitespace-only line: not a row

def parse_row(row, cols, i_id, i_amount):  # -> (id, amount) or raises ValueError(reason)
    if isinstance(row, csv.Error): raise ValueError(f"unreadable CSV: {row}")
    if len(row) != len(cols): raise ValueError(f"expected {len(cols)} fields, found {len(row)}")
    bad = [i + 1 for i, f in enumerate(row) if re.search("[\udc80-\udcff]", f)]
    if bad: raise ValueError(f"field {bad[0]} is not valid UTF-8")
    tid, amount = row[i_id].strip(), row[i_amount].strip()
    if not INT64.fullmatch(tid) or not -2**63 <= int(tid) < 2**63: raise ValueError(f"id {tid!r} is not a 64-bit integer")
    if not AMOUNT.fullmatch(amount) or sum(c.isdigit() for c in amount) > 60: raise ValueError(f"amount {amount!r} is not a decimal")
    return int(tid), amount

# ---- one account: runs in a worker thread; publishes through the event loop ----
class Job:
    def __init__(self, loop, publish): self.loop, self.pub, self.pending, self.bytes, self.cancelled = loop, publish, [], 0, False
    def publish(self, subject, body, msg_id, import_id):  # pipelined, bounded by this job's share of the window
        if self.cancelled: raise Cancelled()
        data = json.dumps(body, separators=(",", ":")).encode()
        self.pending.append((asyncio.run_coroutine_threadsafe(self.pub(subject, data, msg_id, import_id), self.loop), len(data)))
        self.bytes += len(data)
        while self.bytes > PUBLISH_WINDOW / CONCURRENCY and self.pending: self.settle_one()
    def settle_one(self):
        fut, n = self.pending.pop(0); fut.result(); self.bytes -= n
    def drain(self):
        while self.pending: self.settle_one()

def fetch_account(job, upd, key, in_subject, delivered):
    url, safe, imp, acct = upd["transactions_url"], redact(upd["transactions_url"]), upd["import_id"], upd["account_id"]
    st = {"window": 0, "batch": [], "messages": 0, "transactions": 0, "rejected": 0}
    def flush():  # publish window st.window, even when empty: completion matches every id
        w = st["window"]
        job.publish(f"{SUBJ}transactions.{acct}", {"import_id": imp, "account_id": acct, "transactions": st["batch"]},
                    f"{key}/lines-{2 + w * N}-{1 + (w + 1) * N}", imp)
        st.update(window=w + 1, batch=[], messages=st["messages"] + 1)
    try:
        with open_url(url) as resp:
            reader, header = csv.reader(csv_lines(resp)), []
            for header in reader:  # the first non-blank line is the header (blank lines before it still count)
                if not blank(header): break
            cols = [h.strip().lower() for h in header]
            missing = [c for c in ("id", "amount") if c not in cols]
            if missing: raise Permanent(f"{safe}: not a transactions CSV: missing column(s) {', '.join(missing)} in header {cols!r}")
            i_id, i_amount = cols.index("id"), cols.index("amount")
            prev = last = reader.line_num  # last: last line of the last row, which bounds the windows
            while True:
                if job.cancelled: raise Cancelled()
                try: row = next(reader)
                except StopIteration: break
                except csv.Error as e: row = e  # one broken row; the reader goes on at the next line
                first, prev = prev + 1, reader.line_num  # a row belongs to the window of its first line
                if isinstance(row, list) and blank(row): continue
                last = prev
                while (first - 2) // N > st["window"]: flush()
                try:
                    tid, amount = parse_row(row, cols, i_id, i_amount)
                    st["batch"].append({"id": tid, "amount": amount, "line": first}); st["transactions"] += 1
                except ValueError as e:
                    st["rejected"] += 1
                    job.publish(f"{SUBJ}dead-letters.fetcher", {
                        "stage": "fetcher", "kind": "malformed-row", "error": f"{safe} line {first}: {e}",
                        "import_id": imp, "subject": in_subject, "body": None, "body_base64": None, "headers": {},
                        "delivered": delivered, "url": safe, "line": first, "time": now()}, f"{key}/rejected-line-{first}", imp)
            while last >= 2 and st["window"] <= (last - 2) // N: flush()
        job.drain()
        return st
    except (Permanent, Cancelled): job.drain(); raise  # rows read before a mid-stream limit are kept
    except (gzip.BadGzipFile, zlib.error, csv.Error) as e: job.drain(); raise Permanent(f"{safe}: unreadable: {e}")
    except (OSError, EOFError, http.client.HTTPException) as e:  # timeouts, resets, truncated bodies
        raise Transient(f"{safe}: {type(e).__name__}: {e}")

# ---- the stage: pull, work with bounded concurrency, settle each message ----
class Stage:
    async def run(self):
        self.nc = await nats.connect(servers=[s.strip() for s in NATS_URL.split(",")], max_reconnect_attempts=-1,
                                     disconnected_cb=self.on_disconnect)
        self.js = self.nc.jetstream()
        sub = await self.js.pull_subscribe_bind(durable="fetcher", stream=STREAM)  # made by `sluice setup`
        self.ack_wait = (await sub.consumer_info()).config.ack_wait or 30
        self.loop, stop, tasks = asyncio.get_running_loop(), asyncio.Event(), set()
        for s in (signal.SIGTERM, signal.SIGINT): self.loop.add_signal_handler(s, stop.set)
        log(f"bound to consumer fetcher on {STREAM}; {N} lines per message")
        while not stop.is_set():
            if len(tasks) >= CONCURRENCY:  # no free slot: wait for one (or for a signal)
                waiter = asyncio.ensure_future(stop.wait())
                await asyncio.wait(tasks | {waiter}, return_when=asyncio.FIRST_COMPLETED); waiter.cancel(); continue
            try: msgs = await sub.fetch(CONCURRENCY - len(tasks), timeout=1)
            except (nats.errors.TimeoutError, asyncio.TimeoutError): continue
            for m in msgs:
                if stop.is_set(): await m.nak(); continue  # arrived after the signal: hand it back
                t = asyncio.create_task(self.handle(m)); tasks.add(t); t.add_done_callback(tasks.discard)
        log("shutdown requested: no new work; finishing what is in flight")
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
            for t in late: t.cancel()  # each Naks its message
            await asyncio.gather(*late, return_exceptions=True)
        await self.nc.flush(); await self.nc.close(); log("stopped")

    async def on_disconnect(self):
        if not self.nc.is_closed: log("disconnected from NATS; reconnecting")

    async def publish(self, subject, data, msg_id, import_id):  # an outage holds the message, it never fails it
        delay = 0.25
        while True:
            hdrs = {"Nats-Msg-Id": msg_id, **({"Sluice-Import-Id": import_id} if import_id else {})}
            try: return await self.js.publish(subject, data, timeout=5, headers=hdrs)
            except (nats.errors.Error, asyncio.TimeoutError) as e:
                log(f"dependency unavailable ({type(e).__name__}: {e}); holding the messages in hand")
                await asyncio.sleep(delay); delay = min(delay * 2, 5)

    async def keep_owned(self, msg):  # in-progress acks so a long download is not redelivered
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception): await msg.in_progress()  # NATS away: try again next tick

    async def handle(self, msg):
        meta, hdrs = msg.metadata, msg.headers or {}
        msg_id = hdrs.get("Nats-Msg-Id") or f"{meta.stream}:{meta.sequence.stream}"  # fallback: not in the contract
        key, delivered, job = hdrs.get("Sluice-Replay-Of") or msg_id, meta.num_delivered, None
        imp, keeper = hdrs.get("Sluice-Import-Id"), asyncio.create_task(self.keep_owned(msg))
        try:
            try: upd = json.loads(msg.data)
            except ValueError as e: raise Permanent(f"undecodable account update: {e}")
            if not (isinstance(upd, dict) and isinstance(upd.get("import_id"), str) and IMPORT_ID.fullmatch(upd["import_id"])
                    and type(upd.get("account_id")) is int and -2**63 <= upd["account_id"] < 2**63 and isinstance(upd.get("transactions_url"), str)):
                raise Permanent("undecodable account update: needs import_id, account_id (int64) and transactions_url")
            imp, job, fut = upd["import_id"], Job(self.loop, self.publish), self.loop.create_future()
            def work():  # blocking HTTP + CSV in a thread; result back to the loop
                try: r = (True, fetch_account(job, upd, key, msg.subject, delivered))
                except BaseException as e: r = (False, e)
                self.loop.call_soon_threadsafe(lambda: fut.done() or (fut.set_result(r[1]) if r[0] else fut.set_exception(r[1])))
            threading.Thread(target=work, daemon=True).start()
            try: st = await asyncio.wait_for(fut, MAX_PROCESSING)
            except asyncio.TimeoutError:  # a download that never ends: stop its thread, retry later
                job.cancelled = True; raise Transient(f"{redact(upd['transactions_url'])}: gave up after {MAX_PROCESSING:.0f}s of processing")
            await self.publish(f"{SUBJ}import-progress.{imp}.fetched", json.dumps({
                "fact": "fetched", "import_id": imp, "account_key": key, "account_id": upd["account_id"], "messages": st["messages"],
                "lines_per_message": N, "transactions": st["transactions"], "rejected_rows": st["rejected"],
                "url": redact(upd["transactions_url"])}).encode(), f"{key}/fetched", imp)
            await msg.ack_sync()  # only now: everything above is stored
            log(f"account {key} ({redact(upd['transactions_url'])}): {st['messages']} messages, "
                f"{st['transactions']} transactions, {st['rejected']} rejected rows")
        except Permanent as e: await self.give_up(msg, msg_id, key, imp, delivered, "permanent", str(e))
        except Transient as e: await self.retry(msg, msg_id, key, imp, delivered, e)
        except (asyncio.CancelledError, Cancelled):  # shutdown timeout: hand back, never ack unfinished work
            if job: job.cancelled = True
            await msg.nak(); log(f"account {key}: handed back (shutdown)")
        except Exception as e:  # anything unforeseen: retry rather than lose or dead-letter it
            await self.retry(msg, msg_id, key, imp, delivered, Transient(f"{type(e).__name__}: {e}"))
        finally: keeper.cancel()

    async def retry(self, msg, msg_id, key, imp, delivered, e):  # Nak(delay) doubling; the last delivery dead-letters
        if delivered >= MAX_DELIVERIES: return await self.give_up(msg, msg_id, key, imp, delivered, "exhausted", str(e))
        delay = min(BACKOFF * 2 ** (delivered - 1), BACKOFF_MAX) * random.uniform(0.8, 1.2)
        log(f"account {key}: transient failure; retrying in {delay:.1f}s (delivery {delivered}): {e}")
        await msg.nak(delay=delay)

    async def give_up(self, msg, msg_id, key, imp, delivered, kind, error):
        imp = imp if imp and IMPORT_ID.fullmatch(imp) else None
        try: body, body64 = msg.data.decode("utf-8"), None
        except UnicodeDecodeError: body, body64 = None, base64.b64encode(msg.data).decode()
        letter = {"stage": "fetcher", "kind": kind, "error": error, "import_id": imp, "subject": msg.subject, "body": body,
                  "body_base64": body64, "headers": {k: [v] for k, v in (msg.headers or {}).items()},
                  "delivered": delivered, "url": None, "line": None, "time": now()}
        outs = [self.publish(f"{SUBJ}dead-letters.fetcher", json.dumps(letter).encode(), f"{msg_id}/dead-letter", imp)]
        if imp:  # the tracker needs the key to stop waiting for this account
            outs.append(self.publish(f"{SUBJ}import-progress.{imp}.failed", json.dumps({"fact": "failed", "import_id": imp,
                "stage": "fetcher", "key": key, "kind": kind, "error": error}).encode(), f"{msg_id}/failed", imp))
        await asyncio.gather(*outs)
        await msg.term()
        log(f"account {key}: dead-lettered ({kind}): {error}")

if __name__ == "__main__":
    asyncio.run(Stage().run())
    sys.stderr.flush()
    os._exit(0)  # downloads handed back may still block their daemon threads; interpreter teardown would wait on them
