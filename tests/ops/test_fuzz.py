"""Fuzzing: schemathesis over the whole OpenAPI document, against a real API process (uvicorn over
HTTP), in every role: anonymous, a builder (funded, with an active membership), a tester (verified,
with a payout account and earnings) and an admin.

Every response must pass: not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance and response_headers_conformance. positive_data_acceptance is left out:
business refusals (409 insufficient_funds, 422 weak_password, ...) are legitimate answers to data
the schema allows.

The run is deterministic (derandomized Hypothesis, no example database) and sized to about a minute
on two cores: each operation gets POSITIVE + NEGATIVE examples in the roles that may call it, and
WRONG_ROLE examples in the others (their 401 and 403 answers are checked too). The rate limits are
raised through their settings so that the examples reach the handlers instead of 429. Every
distinct failure is collected and reported together, with a curl command to reproduce it. With
`-s` the test prints its figures and each operation's statuses per role; FUZZ_SCALE=10 runs ten
times as many examples (a deeper hunt by hand, not for CI).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.auth.dependencies import get_current_user
from app.db import run_in_transaction
from app.integrations import payments
from app.ledger import accounts
from app.ledger import service as ledger
from app.ops import health
from app.outbox.models import OutboxTask
from app.users.models import User
from tests.fixtures.factories import drain_jobs, fund_wallet, post_stripe_event, stripe_event, user_doc

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("anonymous", "builder", "tester", "admin")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# Examples per operation and role (see the module docstring). FUZZ_SCALE=10 makes a deeper run by hand.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
POSITIVE, NEGATIVE, WRONG_ROLE = int(25 * SCALE), int(15 * SCALE), 4
KNOWN = int(8 * SCALE)  # per extra pass with real ids in the path (or a real card), where random ones get 404
LIMITS = {  # per-user, per-IP and per-address limits, out of the fuzzer's way (they have their own tests)
    "USER_RATE_PER_MINUTE": "1000000",
    "LOGIN_RATE_PER_MINUTE": "1000000",
    "LOGIN_FAILURES_BEFORE_BACKOFF": "1000000",
    "EMAIL_RATE_PER_IP_PER_HOUR": "1000000",
    "EMAIL_RATE_PER_ADDRESS_PER_HOUR": "1000000",
    "RESET_CONFIRM_RATE_PER_IP_PER_MINUTE": "1000000",
}

# Known findings whose fix belongs to a file outside this test's reach, each as
# (operation label, failure title): narrowly scoped, and named in the report. None today.
EXCLUDED: set[tuple[str, str]] = set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_process(tmp_path):
    """uvicorn serving app.main:app over HTTP, on the suite's MongoDB database and Redis."""
    port = _free_port()
    env = {**os.environ, **LIMITS, "LOG_LEVEL": "WARNING", "STRIPE_SIMULATE_CONNECT": "true",
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-access-log", "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the API process did not start:\n{log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _identities(client, actors) -> tuple[dict[str, dict[str, str]], dict[str, list[Any]]]:
    """Headers per role, and real values for path parameters. The builder has a paid (refundable)
    deposit, more funds and an active membership; the tester a payout account and earnings."""
    builder = await actors.signed_in("builder")
    tester = await actors.signed_in("tester")
    admin = await actors.admin()
    deposit = await client.post("/api/wallet/deposits", json={"amount_cents": 20_000}, headers=builder["headers"])
    assert deposit.status_code == 201, deposit.text
    intent_id = deposit.json()["payment_intent_id"]
    await payments.client().v1.payment_intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
    await payments.client().v1.payment_intents.confirm_async(intent_id)
    event = stripe_event("payment_intent.succeeded", (await payments.retrieve_payment_intent(intent_id)).to_dict())
    assert (await post_stripe_event(client, event)).status_code == 200
    await drain_jobs()
    await fund_wallet(builder["id"], 50_000)
    member = await user_doc(builder["id"])
    member.membership.status = "active"
    await member.save()
    payee = await user_doc(tester["id"])
    await User.get_pymongo_collection().update_one(
        {"_id": payee.id}, {"$set": {"stripe_account_id": f"acct_fuzz{tester['id'][-8:]}", "payouts_enabled": True}})
    await run_in_transaction(lambda s: ledger.post(
        s, "test.earnings", f"fuzz-earnings:{tester['id']}",
        [(accounts.EXTERNAL, -100_000), (accounts.tester_available(payee.id), 100_000)]))
    headers = {"anonymous": {}, "builder": builder["headers"], "tester": tester["headers"], "admin": admin["headers"]}
    known = {"user_id": [builder["id"], tester["id"], admin["id"]], "deposit_id": [deposit.json()["deposit_id"]],
             "task_id": [(await OutboxTask.find_one()).id], "event_id": [json.loads(event)["id"]]}
    return headers, known


def _roles_by_operation(app) -> dict[str, set[str]]:
    """Which roles may call each operation, read off the routes' dependencies."""
    from fastapi.routing import iter_route_contexts

    found: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        calls = list(_calls(dependant))
        roles: set[str] = {"anonymous"}
        if get_current_user in calls:
            roles = {"builder", "tester", "admin"}
            for call in calls:
                if getattr(call, "__qualname__", "").startswith("require_roles."):
                    roles &= {v for cell in call.__closure__ or () for v in _strings(cell.cell_contents)}
        for method in route.methods or ():
            found[f"{method} {route.path_format}"] = roles
    return found


def _calls(dependant):
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, tuple) else []


def _plan(role: str, allowed: set[str]) -> list[tuple[schemathesis.GenerationMode, int]]:
    if role not in allowed:
        return [(schemathesis.GenerationMode.POSITIVE, WRONG_ROLE)]
    return [(schemathesis.GenerationMode.POSITIVE, POSITIVE), (schemathesis.GenerationMode.NEGATIVE, NEGATIVE)]


async def test_fuzz_every_operation_in_every_role(app, client, actors, api_process):
    base, log = api_process
    identities, known = await _identities(client, actors)
    allowed = _roles_by_operation(app)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    stats: Counter[str] = Counter()
    failures: dict[tuple[str, str, str], str] = {}
    started = time.monotonic()

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        assert label in allowed, f"{label} is in the document but not among the app's routes"
        for role in ROLES:
            if allowed[label] == {"anonymous"} and role != "anonymous":
                continue  # a public route: tokens change nothing
            for mode, examples in _plan(role, allowed[label]):
                _fuzz(operation.as_strategy(generation_mode=mode), examples, base, session,
                      identities[role], f"{label} as {role} ({mode.value})", stats, failures)
            if role not in allowed[label]:
                continue
            for fixed in _known_inputs(operation, label, known):
                _fuzz(operation.as_strategy(**fixed), KNOWN, base, session, identities[role],
                      f"{label} as {role} (known {fixed})", stats, failures)
    elapsed = time.monotonic() - started
    # The run leaves outbox tasks no worker ran: drop them and probe again, so that the session app's
    # /health snapshot does not report the backlog to the tests after this one.
    await OutboxTask.get_pymongo_collection().delete_many({})
    await health.probe()

    totals = {k: v for k, v in sorted(stats.items()) if " -> " not in k}
    summary = f"fuzzed {len(operations)} operations with {stats['requests']} requests in {elapsed:.1f} s; {totals}"
    print(summary)  # with -s: the figures, then each operation and role's statuses
    print("\n".join(f"  {k}: {v}" for k, v in sorted(stats.items()) if " -> " in k))
    report = "\n\n".join(f"[{where}] {title}\n{detail}" for (where, title, _), detail in failures.items())
    assert not failures, f"{summary}\n{len(failures)} distinct failure(s):\n\n{report}\n\n" \
                         f"API log tail:\n{log.read_text(errors='replace')[-3000:]}"


def _known_inputs(operation, label: str, known: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Extra passes with real ids in the path, and a real test card for the membership checkout."""
    names = re.findall(r"\{(\w+)\}", operation.path)
    if len(names) == 1 and names[0] in known:
        return [{"path_parameters": {names[0]: value}} for value in known[names[0]]]
    if label == "POST /api/payments/membership/checkout":
        return [{"body": {"payment_method_id": "pm_card_visa"}}]
    return []


def _fuzz(strategy, examples: int, base: str, session: requests.Session, headers: dict[str, str],
          where: str, stats: Counter, failures: dict) -> None:
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        except requests.RequestException as exc:
            failures.setdefault((where, "no answer", type(exc).__name__), f"{exc}\n{case.as_curl_command(headers)}")
            return
        stats["requests"] += 1
        stats[str(response.status_code)] += 1
        stats[f"{where.split(' (')[0]} -> {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (FailureGroup, Failure) as exc:
            found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            for failure in found:
                if (f"{case.operation.method.upper()} {case.operation.path}", failure.title) in EXCLUDED:
                    continue
                key = (where, failure.title, str(response.status_code))
                failures.setdefault(key, f"{failure.message}\nstatus {response.status_code}: "
                                         f"{response.text[:500]}\n{case.as_curl_command(headers)}")

    try:
        run()
    except Unsatisfiable:  # nothing to generate: e.g. negative data for an operation without parameters
        stats["unsatisfiable"] += 1
