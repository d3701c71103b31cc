"""Property-based stateful test of the whole money model.

Random sequences of deposit, webhook (delivered 1-3 times), hold, release, void, split, refund
(provider success and refusal) and payout (transfer success and refusal) run against the real
services; after every step the ledger invariants hold and every balance matches a plain
in-memory model. Hypothesis drives a synchronous state machine in a worker thread; each step
runs its coroutines on the test's event loop.
"""

import asyncio
import uuid
from collections import Counter

import stripe
from beanie import PydanticObjectId
from hypothesis import HealthCheck, settings as hyp_settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule

from app.config import get_settings
from app.errors import InsufficientFunds, PaymentProviderError
from app.escrow import service as escrow
from app.integrations import payments
from app.kit.money import fee_for, prorate
from app.ledger import service as ledger
from app.ledger import accounts
from app.ledger.accounts import REVENUE
from app.payments import inbox
from app.payouts import service as payouts
from app.payouts.models import Payout
from app.users.models import User
from app.wallet import deposits, refunds
from tests.fixtures.factories import PASSWORD, drain_jobs, new_id, stripe_event, stripe_signature, unique_email


def refusal(message: str) -> PaymentProviderError:
    """A definite refusal (HTTP 400), as payments.call() raises it."""
    cause = stripe.InvalidRequestError(message, None, http_status=400)
    try:
        raise payments.provider_failure(cause) from cause
    except PaymentProviderError as exc:
        return exc


async def make_user(role: str, **fields) -> User:
    user = User(email=unique_email(role), password_hash=PASSWORD, role=role, display_name=role,
                email_verified=True, **fields)
    await user.insert()
    return user


class MoneyMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop  # set by the test
    seen: Counter = Counter()  # which outcomes the random runs reached

    deposits = Bundle("deposits")
    holds = Bundle("holds")

    def __init__(self):
        super().__init__()
        self.builder = self.run(make_user("builder"))
        self.tester = self.run(make_user("tester", stripe_account_id=f"acct_sim_{uuid.uuid4().hex[:8]}",
                                         payouts_enabled=True))
        self.revenue_start = self.run(ledger.balance(REVENUE))
        self.available = self.held = self.earned = self.revenue = 0
        self.lots: list[int] = []  # refundable remainder of each credited deposit, oldest first
        self.paid: set[str] = set()
        self.credited: set[str] = set()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    # -- deposits and the webhook ------------------------------------------------------------
    @initialize(cents=st.integers(3_000, 9_000), deliveries=st.integers(1, 3))
    def opening_deposit(self, cents, deliveries):
        """Start funded, with some earnings released to the tester, so every rule can succeed."""
        self.paid_deposit(cents, deliveries)
        self.release(self.hold(pct=30))

    @rule(target=deposits, cents=st.integers(500, 5_000))
    def deposit(self, cents):
        """Created but not (yet) paid: the webhook rule may confirm it later, out of order."""
        created = self.run(deposits.create_deposit(self.builder, cents, new_id()))
        return (created.payment_intent_id, cents)

    @rule(cents=st.integers(500, 5_000), deliveries=st.integers(1, 3))
    def paid_deposit(self, cents, deliveries):
        self.webhook(self.deposit(cents), deliveries)

    @rule(dep=deposits, deliveries=st.integers(1, 3))
    def webhook(self, dep, deliveries):
        intent_id, cents = dep
        self.run(self._pay_and_deliver(intent_id, deliveries))
        self.seen["webhook_duplicate" if deliveries > 1 else "webhook"] += 1
        if intent_id not in self.credited:
            self.credited.add(intent_id)
            self.available += cents
            self.lots.append(cents)

    async def _pay_and_deliver(self, intent_id: str, deliveries: int) -> None:
        if intent_id not in self.paid:
            intents = payments.client().v1.payment_intents
            await intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
            await intents.confirm_async(intent_id)
            self.paid.add(intent_id)
        current = (await payments.retrieve_payment_intent(intent_id)).to_dict()
        body = stripe_event("payment_intent.succeeded", current)
        for _ in range(deliveries):  # the same event id, delivered again
            await inbox.receive(body, stripe_signature(body))
        await drain_jobs()

    # -- escrow --------------------------------------------------------------------------------
    @rule(target=holds, pct=st.integers(1, 130))
    def hold(self, pct):
        """Sized against the funds the model expects, so both outcomes stay likely."""
        payout = max(1, self.available * pct // 120)
        total = payout + fee_for(payout, get_settings().platform_fee_bps)
        try:
            made = self.run(escrow.hold_now(self.builder.id, self.tester.id, payout, key=f"prop:{uuid.uuid4().hex}"))
        except InsufficientFunds:
            assert total > self.available
            self.seen["hold_refused"] += 1
            return multiple()
        assert total <= self.available
        self.seen["hold"] += 1
        self.available -= total
        self.held += total
        return made

    @rule(h=consumes(holds))
    def release(self, h):
        self.run(escrow.release_now(h.id))
        self.seen["release"] += 1
        self.held -= h.total_cents
        self.earned += h.amount_cents
        self.revenue += h.fee_cents

    @rule(h=consumes(holds), refund=st.booleans())
    def void(self, h, refund):
        self.run(escrow.void_now(h.id, "refunded" if refund else "voided"))
        self.seen["void"] += 1
        self.held -= h.total_cents
        self.available += h.total_cents

    @rule(h=consumes(holds), share=st.integers(1, 99))
    def split(self, h, share):
        tester_cents = max(1, min(h.amount_cents - 1, h.amount_cents * share // 100))
        if h.amount_cents < 2:
            return
        self.run(escrow.split_now(h.id, tester_cents))
        self.seen["split"] += 1
        fee = prorate(h.fee_cents, tester_cents, h.amount_cents)
        self.held -= h.total_cents
        self.earned += tester_cents
        self.revenue += fee
        self.available += h.total_cents - tester_cents - fee

    # -- refunds -------------------------------------------------------------------------------
    @rule(pct=st.integers(1, 120), provider_refuses=st.booleans())
    def refund(self, pct, provider_refuses):
        cents = max(1, min(self.available, sum(self.lots)) * pct // 100)
        ok = cents <= self.available and cents <= sum(self.lots)
        try:
            made = self.run(self._refund(cents, provider_refuses))
        except InsufficientFunds:
            assert not ok
            self.seen["refund_refused"] += 1
            return
        assert ok
        self.seen["refund_provider_refused" if provider_refuses else "refund"] += 1
        statuses = {r.status for r in made}
        assert statuses == ({"failed"} if provider_refuses else {"succeeded"})
        if not provider_refuses:
            self.available -= cents
            self._consume_lots(cents)

    async def _refund(self, cents: int, provider_refuses: bool):
        if not provider_refuses:
            return await refunds.request_refund(self.builder.id, cents, uuid.uuid4().hex)
        real = payments.create_refund

        async def refuse(*_, **__):
            raise refusal("card closed")

        payments.create_refund = refuse
        try:
            return await refunds.request_refund(self.builder.id, cents, uuid.uuid4().hex)
        finally:
            payments.create_refund = real

    def _consume_lots(self, cents: int) -> None:
        for i, remaining in enumerate(self.lots):
            take = min(remaining, cents)
            self.lots[i] -= take
            cents -= take
        assert cents == 0

    # -- payouts -------------------------------------------------------------------------------
    @rule(pct=st.integers(1, 120), transfer_fails=st.booleans())
    def payout(self, pct, transfer_fails):
        cents = max(1, self.earned * pct // 100)
        try:
            self.run(self._payout(cents, transfer_fails))
        except InsufficientFunds:
            assert cents > self.earned
            self.seen["payout_refused"] += 1
            return
        assert cents <= self.earned
        self.seen["payout_transfer_failed" if transfer_fails else "payout"] += 1
        if not transfer_fails:
            self.earned -= cents

    async def _payout(self, cents: int, transfer_fails: bool) -> None:
        payout = await payouts.request_payout(self.tester, cents, new_id())
        real = payments.create_transfer

        async def refuse(*_, **__):
            raise refusal("account closed")

        if transfer_fails:
            payments.create_transfer = refuse
        try:
            await drain_jobs()
        finally:
            payments.create_transfer = real
        assert (await Payout.get(PydanticObjectId(payout.id))).status == ("failed" if transfer_fails else "paid")

    # -- after every step ----------------------------------------------------------------------
    @invariant()
    def ledger_matches_model(self):
        report = self.run(ledger.check_invariants())
        assert report["ok"], report["violations"]
        names = [accounts.builder_available(self.builder.id), accounts.builder_held(self.builder.id),
                 accounts.tester_available(self.tester.id), accounts.tester_payout_pending(self.tester.id), REVENUE]
        actual = self.run(ledger.balances(names))
        assert [actual[n] for n in names] == [self.available, self.held, self.earned, 0,
                                              self.revenue_start + self.revenue]


async def test_money_model_under_random_operations(settings, monkeypatch):
    settings.stripe_simulate_connect = True
    # Hypothesis mixes constants found in our own source into its draws, so any code change would
    # reshuffle these derandomized runs (and which rules they reach). Keep the runs a function of
    # the seed alone.
    from hypothesis.internal.conjecture import providers

    monkeypatch.setattr(providers, "_get_local_constants", lambda: providers.Constants())
    settings.min_payout_cents = 1
    MoneyMachine.loop = asyncio.get_running_loop()
    test_case = MoneyMachine.TestCase
    test_case.settings = hyp_settings(
        max_examples=15, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    MoneyMachine.seen.clear()
    await asyncio.to_thread(test_case().runTest)
    # The random runs must actually reach every kind of step, or the property proves little.
    wanted = {"webhook", "hold", "release", "void", "split", "refund", "refund_provider_refused", "payout",
              "payout_transfer_failed"}
    assert wanted <= set(MoneyMachine.seen), MoneyMachine.seen
