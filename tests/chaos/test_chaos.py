"""End to end under chaos: builders deposit and refund for about a minute against a private
`scripts/stack.py run` while Redis refuses writes at random, Stripe redelivers events late and in
bursts, and the worker is SIGKILLed twice. The stack must stay up, no request may get a 500, and
every acknowledged deposit and refund must be accounted for exactly once, in our records (MongoDB,
the wallet, the ledger check) and at the provider (localstripe).

Knobs (environment): CHAOS_SEED (fault timing and amounts), CHAOS_SECONDS (workload length).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import pymongo
from bson import ObjectId

from tests.chaos.harness import (
    PASSWORD,
    Api,
    ChaosStack,
    Provider,
    Recorder,
    RedisWrites,
    error_code,
    redeliver,
    wait_for,
)
from tests.fixtures.private_stack import alive, children_of, health_ok

SEED = int(os.environ.get("CHAOS_SEED", "20261123"))
WORKLOAD_SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
BUILDERS = 3
LANES_PER_BUILDER = 2  # concurrent clients per builder: deposits and refunds race on one wallet
REQUEST_BUDGET_SECONDS = 60  # one money request, retried with its key, must be answered within this
QUIESCE_SECONDS = 75  # the worker drains what piled up while Redis refused writes

STACK_SETTINGS = {
    "USER_RATE_PER_MINUTE": "1000000",
    "LOGIN_RATE_PER_MINUTE": "1000",
    "DAILY_DEPOSIT_LIMIT_CENTS": "10000000",  # the workload is not about the daily quota
    "OUTBOX_SWEEP_SECONDS": "2",
    "OUTBOX_LEASE_SECONDS": "6",
    "OUTBOX_RETRY_BASE_SECONDS": "1",
    "OUTBOX_RETRY_MAX_SECONDS": "4",
    "IDEMPOTENCY_LEASE_SECONDS": "5",
    "HEALTH_PROBE_SECONDS": "1",
}


# -- the plan: when each fault happens, drawn from the seed ----------------------------------------
@dataclass
class Plan:
    redis_windows: list[tuple[float, float]]  # (start offset, seconds refusing writes)
    worker_kills: list[tuple[float, bool]]  # (offset, also kill the work horse running a job)
    bursts: list[tuple[float, int]]  # (offset, events picked)


def make_plan(rng: random.Random, seconds: float) -> Plan:
    windows, t = [], rng.uniform(2, 4)
    while t < seconds - 3:
        length = rng.uniform(0.5, 2.0)
        windows.append((t, length))
        t += length + rng.uniform(2, 5)
    kills = [(seconds * rng.uniform(0.25, 0.35), False), (seconds * rng.uniform(0.6, 0.7), True)]
    bursts, t = [], rng.uniform(3, 6)
    while t < seconds:
        bursts.append((t, rng.randint(6, 16)))
        t += rng.uniform(4, 9)
    return Plan(windows, kills, bursts)


# -- what the clients were told ---------------------------------------------------------------------
@dataclass
class Builder:
    n: int
    id: str
    email: str
    headers: dict[str, str]


@dataclass
class AckedDeposit:
    builder: int
    deposit_id: str
    intent_id: str | None
    amount: int
    attempts: int
    paid: bool = False
    pay_error: str | None = None


@dataclass
class AckedRefund:
    builder: int
    request_id: str
    amount: int
    lots: list[dict]
    attempts: int


@dataclass
class Book:
    deposits: list[AckedDeposit] = field(default_factory=list)
    refunds: list[AckedRefund] = field(default_factory=list)
    insufficient: int = 0
    other_answers: Counter = field(default_factory=Counter)  # (route, status, error) -> n
    unanswered: list[str] = field(default_factory=list)  # money requests never answered in budget
    retried_requests: int = 0  # answered after more than one attempt


@dataclass
class Chaos:
    redis_windows: int = 0
    refused_confirmed: int = 0
    redis_fault_errors: list[str] = field(default_factory=list)
    kills: list[dict] = field(default_factory=list)
    bursts: int = 0
    redeliveries: int = 0
    late_redeliveries: int = 0
    stack_problems: list[str] = field(default_factory=list)


# -- the scenario -----------------------------------------------------------------------------------
async def test_money_stays_exact_under_chaos(tmp_path):
    rng = random.Random(SEED)
    plan = make_plan(rng, WORKLOAD_SECONDS)
    stack = ChaosStack(tmp_path, STACK_SETTINGS)
    recorder, book, chaos = Recorder(), Book(), Chaos()
    api = provider = redis_writes = mongo = None
    background: list[asyncio.Task] = []
    left: list[int] = []
    timings: dict[str, float] = {}
    quiet_loggers = {name: logging.getLogger(name).level for name in ("httpx", "stripe")}
    for name in quiet_loggers:  # thousands of client requests: keep pytest's captured log readable
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name], mark = now - mark, now

    try:
        await asyncio.to_thread(stack.start)
        lap("stack up")
        api, provider = Api(stack.api, recorder), Provider(stack.stripe_base)
        redis_writes = RedisWrites(stack.ports["REDIS_PORT"])
        mongo = pymongo.AsyncMongoClient(stack.mongo_uri)
        db = mongo["chaos"]
        fixed = {name: stack.pid(name) for name in ("api", "mongo")}

        builders = await asyncio.gather(*(sign_up(stack, api, n) for n in range(BUILDERS)))
        admin_headers = await admin(stack, api)
        lap("users")

        # ---- the workload, with the faults
        workload_start = time.monotonic()
        end = workload_start + WORKLOAD_SECONDS
        abort = asyncio.Event()
        late: list[asyncio.Task] = []
        lanes = [asyncio.create_task(lane(api, provider, b, k, random.Random(f"{SEED}:{b.n}:{k}"), end, book, abort))
                 for b in builders for k in range(LANES_PER_BUILDER)]
        faults = [
            asyncio.create_task(redis_faults(redis_writes, plan, workload_start, chaos, abort)),
            asyncio.create_task(worker_kills(stack, plan, workload_start, chaos, abort)),
            asyncio.create_task(stripe_bursts(api, provider, plan, workload_start, random.Random(f"{SEED}:stripe"),
                                              chaos, late, abort)),
        ]
        watcher = asyncio.create_task(watch_stack(stack, fixed, chaos, abort))
        background += [*lanes, *faults, watcher]
        await asyncio.gather(*faults)
        await redis_writes.accept_now()  # the faults stop here: writes are accepted again
        lap("workload")
        if chaos.stack_problems:  # the stack went down: nothing left to settle
            raise AssertionError("\n".join(chaos.stack_problems))

        # ---- settle: clients finish their retries, late deliveries land, Stripe retries unacked events
        done, pending = await asyncio.wait(lanes, timeout=REQUEST_BUDGET_SECONDS + 15)
        for task in pending:
            task.cancel()
            book.unanswered.append("a client lane was still retrying after the settle timeout")
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        background += late
        await asyncio.gather(*late)
        lap("clients done")
        stripe_retried = await stripe_retries_unacked(api, provider, db)
        quiet, backlog = await quiesce(db, book)
        lap("quiescence")
        watcher.cancel()

        # ---- the accounts
        problems: list[str] = list(chaos.stack_problems)
        problems += check_stack(stack, fixed, chaos)
        if not quiet:
            problems.append(f"not quiescent after {QUIESCE_SECONDS} s: {backlog}")
        problems += [f"never answered: {u}" for u in book.unanswered]
        problems += await check_deposits(db, provider, book, builders)
        problems += await check_refunds(db, provider, book, builders)
        problems += await check_wallets(api, db, book, builders)
        problems += await check_ledger(api, admin_headers)
        problems += await check_outbox(db)
        if recorder.server_errors:
            problems.append(f"{len(recorder.server_errors)} answer(s) were 500:\n    "
                            + "\n    ".join(recorder.server_errors[:20]))
        lap("checks")
        timings["total"] = time.monotonic() - t0

        summary = summarize(stack, plan, book, chaos, recorder, stripe_retried, timings)
        print(summary)
        if problems:
            # RQ's own "found an unhandled exception, quitting" on a refused write is expected here:
            # workers/worker.py starts a fresh worker after it.
            evidence = stack.grep(r'"level": "(error|critical)"|Traceback|dead-lettered|unhandled error',
                                  ignore=r"found an unhandled exception, quitting")
            raise AssertionError("chaos found problems:\n- " + "\n- ".join(problems) + "\n" + summary
                                 + "\nerror lines in the logs:\n" + "\n".join(line[:800] for line in evidence)
                                 + f"\nlogs: {stack.run_dir / 'logs'}")
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if redis_writes is not None:
            await redis_writes.accept_now(attempts=4)
            await redis_writes.aclose()
        for closable in (api, provider):
            if closable is not None:
                await closable.aclose()
        if mongo is not None:
            await mongo.close()
        await asyncio.to_thread(stack.stop)
        left = stack.leftovers()
        await asyncio.to_thread(stack.kill_everything)
        for name, level in quiet_loggers.items():
            logging.getLogger(name).setLevel(level)
    # Reached only when the scenario passed: a clean stop leaves nothing behind.
    assert not left, f"processes of the chaos stack left after its SIGTERM: {left}"
    print(f"chaos test done in {time.monotonic() - t0:.1f} s (stack stopped, nothing left behind)")


# -- setup ----------------------------------------------------------------------------------------------
async def sign_up(stack: ChaosStack, api: Api, n: int) -> Builder:
    address = f"chaos-builder{n}-{uuid.uuid4().hex[:6]}@example.com"
    deadline = time.monotonic() + 45
    resp = await api.answered("POST", "/api/auth/register", deadline, json={
        "email": address, "password": PASSWORD, "role": "builder", "display_name": f"Chaos {n}"})
    assert resp is not None and resp.status_code == 201, f"register: {resp and resp.text}\n{stack.report()}"
    user_id = resp.json()["id"]
    token = await wait_for(lambda: stack.mail_token(address), 45, 0.25)
    assert token, f"no verification mail for {address} in {stack.mail_dir} within 45 s\n{stack.report()}"
    resp = await api.answered("POST", "/api/auth/verify-email", deadline, json={"token": token})
    assert resp is not None and resp.status_code == 200, f"verify: {resp and resp.text}"
    resp = await api.answered("POST", "/api/auth/login", deadline, json={"email": address, "password": PASSWORD})
    assert resp is not None and resp.status_code == 200, f"login: {resp and resp.text}"
    return Builder(n, user_id, address, {"Authorization": f"Bearer {resp.json()['access_token']}"})


async def admin(stack: ChaosStack, api: Api) -> dict[str, str]:
    address = f"chaos-admin-{uuid.uuid4().hex[:6]}@example.com"
    await asyncio.to_thread(stack.create_admin, address)
    resp = await api.answered("POST", "/api/auth/login", time.monotonic() + 30,
                              json={"email": address, "password": PASSWORD})
    assert resp is not None and resp.status_code == 200, f"admin login: {resp and resp.text}"
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


# -- the clients ------------------------------------------------------------------------------------------
async def lane(api: Api, provider: Provider, builder: Builder, k: int, rng: random.Random, end: float,
               book: Book, abort: asyncio.Event) -> None:
    """One client of one builder: deposits (paid like Stripe.js) and refunds, until the end."""
    while time.monotonic() < end and not abort.is_set():
        if rng.random() < 0.5:
            await deposit(api, provider, builder, rng, book)
        else:
            await refund(api, provider, builder, rng, book)
        await asyncio.sleep(rng.uniform(0.2, 0.8))


async def post_money(api: Api, kind: str, amount: int, builder: Builder, book: Book) -> tuple["httpx.Response | None", int]:
    """A deposit or refund POST with its own Idempotency-Key, retried as a client would; an
    unanswered one is noted in the book. Returns (response or None, attempts)."""
    key = f"chaos-{kind}-{uuid.uuid4().hex}"
    resp, attempts = await api.money_post(f"/api/wallet/{kind}s", {"amount_cents": amount}, builder.headers, key,
                                          time.monotonic() + REQUEST_BUDGET_SECONDS)
    book.retried_requests += attempts > 1
    if resp is None:
        book.unanswered.append(f"{kind} of {amount} by builder {builder.n} (key {key}, {attempts} attempts)")
    return resp, attempts


async def deposit(api: Api, provider: Provider, builder: Builder, rng: random.Random, book: Book) -> None:
    amount = rng.randrange(500, 3001, 25)
    resp, attempts = await post_money(api, "deposit", amount, builder, book)
    if resp is None:
        return
    if resp.status_code != 201:
        book.other_answers[("deposit", resp.status_code, error_code(resp))] += 1
        return
    body = resp.json()
    acked = AckedDeposit(builder.n, body["deposit_id"], body.get("payment_intent_id"), amount, attempts)
    book.deposits.append(acked)
    if not acked.intent_id:
        acked.pay_error = f"201 without a payment_intent_id: {body}"
        return
    try:
        await provider.pay(acked.intent_id)
        acked.paid = True
    except Exception as exc:  # recorded: an unpaid deposit must simply never be credited
        acked.pay_error = f"{type(exc).__name__}: {exc}"


async def refund(api: Api, provider: Provider, builder: Builder, rng: random.Random, book: Book) -> None:
    wallet = await api.answered("GET", "/api/wallet", time.monotonic() + REQUEST_BUDGET_SECONDS,
                                headers=builder.headers)
    if wallet is None or wallet.status_code != 200:
        book.unanswered.append(f"GET /api/wallet for builder {builder.n}: {wallet and wallet.status_code}")
        return
    available = wallet.json()["available_cents"]
    if available <= 0 and rng.random() < 0.8:
        await deposit(api, provider, builder, rng, book)
        return
    # Mostly what the wallet says is there; sometimes more, which must be a clean 409.
    amount = rng.randint(1, available) if available > 0 and rng.random() < 0.85 else available + rng.randint(1, 2000)
    resp, attempts = await post_money(api, "refund", amount, builder, book)
    if resp is None:
        return
    if resp.status_code == 201:
        body = resp.json()
        book.refunds.append(AckedRefund(builder.n, body["request_id"], amount, body["refunds"], attempts))
    elif resp.status_code == 409 and error_code(resp) == "insufficient_funds":
        book.insufficient += 1
    else:
        book.other_answers[("refund", resp.status_code, error_code(resp))] += 1


# -- the faults -------------------------------------------------------------------------------------------
async def at(offset: float, start: float, abort: asyncio.Event) -> bool:
    """Sleep until start + offset; False when the run was aborted."""
    delay = start + offset - time.monotonic()
    if delay > 0:
        try:
            await asyncio.wait_for(abort.wait(), delay)
        except TimeoutError:
            pass
    return not abort.is_set()


async def redis_faults(writes: RedisWrites, plan: Plan, start: float, chaos: Chaos, abort: asyncio.Event) -> None:
    for offset, length in plan.redis_windows:
        if not await at(offset, start, abort):
            break
        try:
            chaos.refused_confirmed += await writes.refuse()
            chaos.redis_windows += 1
            await asyncio.sleep(length)
        except Exception as exc:  # noqa: BLE001 - recorded; the window just ends
            chaos.redis_fault_errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await writes.accept_now()


async def worker_kills(stack: ChaosStack, plan: Plan, start: float, chaos: Chaos, abort: asyncio.Event) -> None:
    for offset, with_horse in plan.worker_kills:
        if not await at(offset, start, abort):
            break
        old = stack.pid("worker")
        horses: list[int] = []
        if with_horse and old:  # a crash mid-job: wait (briefly) until the worker runs a job in a horse
            horses = await wait_for(lambda old=old: children_of(old), 8, 0.02) or []
        for pid in [old, *horses]:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        new = await wait_for(lambda old=old: stack.restarted_pid("worker", old), 15)
        chaos.kills.append({"at": round(time.monotonic() - start, 1), "old": old, "horses": horses,
                            "new": new or None})


async def stripe_bursts(api: Api, provider: Provider, plan: Plan, start: float, rng: random.Random, chaos: Chaos,
                        late: list[asyncio.Task], abort: asyncio.Event) -> None:
    """Stripe redelivers late and in bursts: real events (same id, same body), re-signed, some several
    times at once, some after a delay, old ones as well as new ones."""

    async def deliver(event: dict, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        chaos.redeliveries += 1
        await redeliver(api, event)

    for offset, size in plan.bursts:
        if not await at(offset, start, abort):
            break
        events = await provider.events()
        if not events:
            continue
        chaos.bursts += 1
        interesting = [e for e in events if e["type"].startswith("payment_intent.")] or events
        picked = rng.sample(interesting, min(size, len(interesting))) + rng.sample(events, min(2, len(events)))
        now = []
        for event in picked:
            for _ in range(rng.choice((1, 1, 2, 3))):
                if rng.random() < 0.3:  # late: a while after the burst (but landing before the settle)
                    chaos.late_redeliveries += 1
                    delay = min(rng.uniform(4, 15), max(1.0, start + WORKLOAD_SECONDS + 3 - time.monotonic()))
                    late.append(asyncio.create_task(deliver(event, delay)))
                else:
                    now.append(deliver(event, 0))
        await asyncio.gather(*now)


async def watch_stack(stack: ChaosStack, fixed: dict[str, int | None], chaos: Chaos, abort: asyncio.Event) -> None:
    """The stack process, the API and MongoDB must stay up, with the same pids, all along."""
    while True:
        if not stack.running():
            chaos.stack_problems.append(f"the stack process exited (rc={stack.proc.returncode})\n{stack.report()}")
            abort.set()
            return
        for name, pid in fixed.items():
            now = stack.pid(name)
            if now != pid or not alive(pid):
                chaos.stack_problems.append(f"{name} changed or died: pid {pid} -> {now}")
                abort.set()
                return
        await asyncio.sleep(0.5)


async def stripe_retries_unacked(api: Api, provider: Provider, db) -> int:
    """Stripe retries an event until it gets a 2xx: redeliver every event the API never stored (an
    event is in inbox_events once the API acknowledged it). Returns how many needed it."""
    stored = {doc["event_id"] for doc in await db.inbox_events.find({}, {"event_id": 1}).to_list()}
    missing = [e for e in await provider.events() if e["id"] not in stored]
    for event in missing:
        deadline = time.monotonic() + 20
        while await redeliver(api, event, label="POST webhook (stripe retry)") != 200:
            assert time.monotonic() < deadline, f"the API never acknowledged event {event['id']} ({event['type']})"
            await asyncio.sleep(0.5)
    return len(missing)


async def quiesce(db, book: Book) -> tuple[bool, str]:
    """Wait until no outbox task is pending, no acknowledged paid deposit is pending and no wallet
    refund is pending."""
    paid = [d.deposit_id for d in book.deposits if d.paid]
    deadline = time.monotonic() + QUIESCE_SECONDS
    while True:
        tasks = await db.outbox.find({"status": "pending"}, {"label": 1, "attempts": 1, "last_error": 1}).to_list()
        deposits = await db.deposits.count_documents({"_id": {"$in": [oid(d) for d in paid]}, "status": "pending"})
        refunds = await db.wallet_refunds.count_documents({"status": "pending"})
        if not tasks and not deposits and not refunds:
            return True, ""
        if time.monotonic() > deadline:
            shown = "; ".join(f"{t['_id']} ({t.get('label')}, attempts {t.get('attempts')}, "
                              f"last_error {str(t.get('last_error'))[:200]})" for t in tasks[:8])
            return False, (f"{len(tasks)} outbox task(s) pending [{shown}], {deposits} paid deposit(s) pending, "
                           f"{refunds} wallet refund(s) pending")
        await asyncio.sleep(0.5)


def oid(value: str) -> ObjectId:
    return ObjectId(value)


# -- the checks -------------------------------------------------------------------------------------------
def check_stack(stack: ChaosStack, fixed: dict[str, int | None], chaos: Chaos) -> list[str]:
    problems = []
    if not stack.running():
        problems.append(f"the stack is not running at the end (rc={stack.proc.returncode})")
    for name, pid in fixed.items():
        if stack.pid(name) != pid or not alive(pid):
            problems.append(f"{name}: pid {pid} at start, {stack.pid(name)} at the end (alive: {alive(pid)})")
    if not health_ok(stack.api):
        problems.append("GET /health does not answer 200 at the end")
    if len(chaos.kills) != 2:
        problems.append(f"expected 2 worker kills, made {len(chaos.kills)}: {chaos.kills}")
    for kill in chaos.kills:
        if not kill["new"]:
            problems.append(f"the worker SIGKILLed at {kill['at']} s (pid {kill['old']}) was not restarted within "
                            f"15 s\n{stack.report()}")
    final = stack.pid("worker")
    if not alive(final):
        problems.append(f"the worker (pid {final}) is not alive at the end")
    if chaos.kills and chaos.kills[-1]["new"] and final != chaos.kills[-1]["new"]:
        problems.append(f"the worker restarted again after the last kill: {chaos.kills[-1]['new']} -> {final}")
    if chaos.redis_fault_errors:
        problems.append(f"could not inject Redis faults: {chaos.redis_fault_errors[:3]}")
    if chaos.redis_windows and not chaos.refused_confirmed:
        problems.append("Redis never really refused a write: the write fault did not work")
    return problems


async def check_deposits(db, provider: Provider, book: Book, builders: list[Builder]) -> list[str]:
    problems = []
    ours = {d.deposit_id: d for d in book.deposits}
    for dep in book.deposits:
        doc = await db.deposits.find_one({"_id": oid(dep.deposit_id)})
        journals = await db.journals.count_documents({"key": f"deposit:{dep.deposit_id}"})
        lots = await db.wallet_allocations.count_documents({"deposit_id": oid(dep.deposit_id)})
        status = doc and doc.get("status")
        if not dep.paid:
            if status == "succeeded" or journals:
                problems.append(f"deposit {dep.deposit_id} was never paid ({dep.pay_error}) but is {status} "
                                f"with {journals} journal(s)")
            continue
        intent = await provider.payment_intent(dep.intent_id)
        if status != "succeeded" or journals != 1 or lots != 1:
            problems.append(f"paid deposit {dep.deposit_id} ({dep.amount} cents, {dep.intent_id}): status {status}, "
                            f"{journals} journal(s) deposit:<id>, {lots} lot(s); expected succeeded, 1, 1")
        if doc and (doc.get("amount_cents") != dep.amount or doc.get("payment_intent_id") != dep.intent_id):
            problems.append(f"deposit {dep.deposit_id} differs from its 201: {doc} vs {dep}")
        if intent["status"] != "succeeded" or intent["amount"] != dep.amount:
            problems.append(f"PaymentIntent {dep.intent_id} of deposit {dep.deposit_id} is {intent['status']} "
                            f"for {intent['amount']} cents at the provider; expected succeeded for {dep.amount}")
    # Nothing credited that no client was told about (a second deposit opened by a retried request).
    builder_ids = [oid(b.id) for b in builders]
    async for doc in db.deposits.find({"builder_id": {"$in": builder_ids}}):
        if str(doc["_id"]) not in ours:
            problems.append(f"deposit {doc['_id']} ({doc.get('status')}, {doc.get('amount_cents')} cents) was never "
                            f"acknowledged to a client")
    credited = await db.journals.count_documents({"key": {"$regex": "^deposit:"}})
    paid = sum(d.paid for d in book.deposits)
    if credited != paid:
        problems.append(f"{credited} deposit journals for {paid} paid deposits")
    return problems


async def check_refunds(db, provider: Provider, book: Book, builders: list[Builder]) -> list[str]:
    problems = []
    acked = {r.request_id: r for r in book.refunds}
    if len(acked) != len(book.refunds):
        problems.append("two acknowledged refund requests share a request_id")
    by_id: dict[str, dict] = {}
    async for doc in db.wallet_refunds.find({"builder_id": {"$in": [oid(b.id) for b in builders]}}):
        by_id[str(doc["_id"])] = doc
        if doc["request_id"] not in acked:
            problems.append(f"wallet refund {doc['_id']} ({doc['amount_cents']} cents, {doc['status']}) belongs to no "
                            f"acknowledged request ({doc['request_id']})")
    for req in book.refunds:
        docs = [d for d in by_id.values() if d["request_id"] == req.request_id]
        if sum(d["amount_cents"] for d in docs) != req.amount:
            problems.append(f"refund request {req.request_id} asked {req.amount} cents; its wallet refunds sum to "
                            f"{sum(d['amount_cents'] for d in docs)} ({len(docs)} lots)")
        told = {lot["refund_id"]: lot["amount_cents"] for lot in req.lots}
        have = {str(d["_id"]): d["amount_cents"] for d in docs}
        if told != have:
            problems.append(f"refund request {req.request_id}: the 201 listed {told}, the records are {have}")
        for d in docs:
            if d["status"] not in ("succeeded", "failed"):
                problems.append(f"wallet refund {d['_id']} is {d['status']} after quiescence")
    # At the provider: one refund per succeeded wallet refund, with its amount; none for a failed
    # one; none that no wallet refund explains.
    made: dict[str, list[dict]] = defaultdict(list)
    for intent_id in sorted({d.intent_id for d in book.deposits if d.paid}):
        refunded = 0
        for provider_refund in await provider.refunds(intent_id):
            wallet_refund_id = (provider_refund.get("metadata") or {}).get("wallet_refund_id")
            refunded += provider_refund["amount"]
            if wallet_refund_id not in by_id:
                problems.append(f"provider refund {provider_refund['id']} of {intent_id} "
                                f"({provider_refund['amount']} cents) has no wallet refund ({wallet_refund_id})")
                continue
            made[wallet_refund_id].append(provider_refund)
        amount = next(d.amount for d in book.deposits if d.intent_id == intent_id)
        if refunded > amount:
            problems.append(f"{intent_id}: {refunded} cents refunded at the provider of a {amount} cent payment")
    for refund_id, doc in by_id.items():
        at_provider = made.get(refund_id, [])
        if doc["status"] == "succeeded":
            if len(at_provider) != 1:
                problems.append(f"succeeded wallet refund {refund_id} ({doc['amount_cents']} cents of "
                                f"{doc['payment_intent_id']}) has {len(at_provider)} provider refunds: "
                                f"{[r['id'] for r in at_provider]}")
            elif (at_provider[0]["amount"] != doc["amount_cents"]
                  or at_provider[0].get("payment_intent") not in (None, doc["payment_intent_id"])
                  or at_provider[0]["id"] != doc.get("provider_refund_id")):
                problems.append(f"wallet refund {refund_id} ({doc['amount_cents']} cents, provider id "
                                f"{doc.get('provider_refund_id')}) vs provider refund {at_provider[0]}")
        elif doc["status"] == "failed" and at_provider:
            problems.append(f"failed wallet refund {refund_id} has provider refunds {[r['id'] for r in at_provider]}")
    return problems


async def check_wallets(api: Api, db, book: Book, builders: list[Builder]) -> list[str]:
    problems = []
    for b in builders:
        resp = await api.answered("GET", "/api/wallet", time.monotonic() + 20, headers=b.headers)
        if resp is None or resp.status_code != 200:
            problems.append(f"GET /api/wallet for builder {b.n}: {resp and resp.text}")
            continue
        wallet = resp.json()
        deposited = sum(d.amount for d in book.deposits if d.builder == b.n and d.paid)
        refunded = 0
        async for doc in db.wallet_refunds.find({"builder_id": oid(b.id), "status": "succeeded"}):
            refunded += doc["amount_cents"]
        expected = deposited - refunded
        if (wallet["available_cents"], wallet["refund_pending_cents"], wallet["held_cents"]) != (expected, 0, 0):
            problems.append(f"builder {b.n}: wallet {wallet}; expected available {expected} "
                            f"(deposits {deposited} - refunds {refunded}), refund_pending 0, held 0")
    return problems


async def check_ledger(api: Api, admin_headers: dict[str, str]) -> list[str]:
    resp = await api.answered("GET", "/api/admin/ledger/check", time.monotonic() + 30, headers=admin_headers)
    if resp is None or resp.status_code != 200:
        return [f"GET /api/admin/ledger/check: {resp and resp.status_code} {resp and resp.text[:500]}"]
    report = resp.json()
    return [] if report.get("ok") is True else [f"ledger check: {report}"]


async def check_outbox(db) -> list[str]:
    dead = await db.outbox.find({"status": "dead"}).to_list()
    return [f"dead-lettered outbox task {t['_id']}: {t.get('label')}, {t.get('attempts')} attempts, last_error "
            f"{t.get('last_error')}" for t in dead]


def summarize(stack: ChaosStack, plan: Plan, book: Book, chaos: Chaos, recorder: Recorder, stripe_retried: int,
              timings: dict[str, float]) -> str:
    paid = [d for d in book.deposits if d.paid]
    refunded_lots = sum(len(r.lots) for r in book.refunds)
    ls_log = stack.log("localstripe")
    delivered, failed = ls_log.count("successfully delivered"), ls_log.count('" failed')
    return "\n".join([
        "",
        f"chaos summary (seed {SEED}, workload {WORKLOAD_SECONDS:.0f} s, {BUILDERS} builders x {LANES_PER_BUILDER})",
        "  time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()),
        f"  deposits acknowledged {len(book.deposits)}, paid {len(paid)} ({sum(d.amount for d in paid)} cents), "
        f"pay errors {sum(1 for d in book.deposits if d.pay_error)}",
        f"  refunds acknowledged {len(book.refunds)} ({sum(r.amount for r in book.refunds)} cents, {refunded_lots} "
        f"lots), insufficient_funds {book.insufficient}, other answers {dict(book.other_answers)}",
        f"  money requests answered only after retries with the same key: {book.retried_requests}",
        f"  faults: Redis refused writes in {chaos.redis_windows} windows (planned {len(plan.redis_windows)}, "
        f"{chaos.refused_confirmed} confirmed); worker kills {chaos.kills}; {chaos.bursts} redelivery bursts, "
        f"{chaos.redeliveries} redeliveries ({chaos.late_redeliveries} late); Stripe retries of unacknowledged "
        f"events {stripe_retried}",
        f"  localstripe's own deliveries: {delivered} delivered, {failed} failed",
        f"  status codes: {recorder.by_status()}",
        recorder.table(),
    ])
