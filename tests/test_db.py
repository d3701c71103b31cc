"""The transaction helper under contention, and its after-commit hook."""

import asyncio

import pytest
from beanie import Document

from app import db
from app.users.models import User


async def test_concurrent_transactional_increments_all_land_once():
    coll = db.get_client()["peertest_scratch"]["counters"]
    await coll.insert_one({"_id": "c", "n": 0})
    calls = {"commits": 0}

    async def increment(session):
        await coll.update_one({"_id": "c"}, {"$inc": {"n": 1}}, session=session)
        db.after_commit(lambda: calls.__setitem__("commits", calls["commits"] + 1))

    await asyncio.gather(*[db.run_in_transaction(increment) for _ in range(20)])
    assert (await coll.find_one({"_id": "c"}))["n"] == 20
    assert calls["commits"] == 20  # callbacks of retried attempts were dropped
    await coll.drop()


async def test_failed_transaction_leaves_no_trace_and_skips_callbacks():
    fired = []

    async def half_done(session):
        await User(email="half@x.io", password_hash="h", role="tester", display_name="H").insert(session=session)
        db.after_commit(lambda: fired.append(1))
        raise ValueError("boom after the write")

    with pytest.raises(ValueError):
        await db.run_in_transaction(half_done)
    assert await User.find_one(User.email == "half@x.io") is None
    assert fired == []


async def test_writes_after_a_conflict_are_visible_to_other_clients():
    """After a failed commit the helper ends the server session, so no zombie hides later writes."""
    coll = db.get_client()["peertest_scratch"]["visible"]

    async def write(i):
        async def fn(session):
            await coll.insert_one({"i": i}, session=session)

        await db.run_in_transaction(fn)

    await asyncio.gather(*[write(i) for i in range(10)])
    from pymongo import AsyncMongoClient

    from app.config import get_settings

    other = AsyncMongoClient(get_settings().mongo_uri)
    try:
        assert await other["peertest_scratch"]["visible"].count_documents({}) == 10
    finally:
        await other.close()
        await coll.drop()


def test_documents_are_found_without_a_list():
    from app import registry
    from app.outbox.models import OutboxTask

    models = registry.document_models()
    assert User in models and OutboxTask in models and all(issubclass(m, Document) for m in models)


class CountedEffect:
    """A transaction body that inserts one document per run into a scratch collection."""

    def __init__(self, name: str, fail_first_run_with: Exception | None = None):
        self.coll = db.get_client()["peertest_scratch"][name]
        self.runs = 0
        self.fail_first_run_with = fail_first_run_with

    async def __call__(self, session) -> None:
        self.runs += 1
        await self.coll.insert_one({"run": self.runs}, session=session)
        if self.runs == 1 and self.fail_first_run_with is not None:
            raise self.fail_first_run_with

    async def committed_runs(self) -> list[int]:
        found = [d["run"] async for d in self.coll.find({})]
        await self.coll.drop()
        return found


def lose_commit_answers(times: int | None) -> None:
    from app import faults
    from tests.fixtures.faults import unknown_commit_result

    def lose_answer():
        raise unknown_commit_result()

    faults.inject("transaction.after_commit", lose_answer, times=times)


async def test_an_unknown_commit_result_retries_the_commit_not_the_body():
    """The commit happened but its answer was lost: the helper asks the server to commit again
    (it confirms), and the body, which would make a second effect, does not run again."""
    body = CountedEffect("effects")
    lose_commit_answers(times=2)  # lost twice, then answered
    await db.run_in_transaction(body)
    assert body.runs == 1 and await body.committed_runs() == [1]


async def test_a_commit_that_stays_unknown_surfaces_the_error_and_never_reruns_the_body():
    from pymongo.errors import OperationFailure

    body = CountedEffect("effects2")
    lose_commit_answers(times=None)
    with pytest.raises(OperationFailure) as raised:
        await db.run_in_transaction(body, timeout=0.3)
    assert raised.value.has_error_label("UnknownTransactionCommitResult")
    assert body.runs == 1 and await body.committed_runs() == [1]  # it did commit, once


async def test_a_write_conflict_reruns_the_body_in_a_new_transaction():
    """Transient failures before a commit are safe to rerun: nothing was committed."""
    from pymongo.errors import OperationFailure

    body = CountedEffect("effects3", fail_first_run_with=OperationFailure("Write conflict during transaction commit"))
    await db.run_in_transaction(body)
    assert body.runs == 2 and await body.committed_runs() == [2]
