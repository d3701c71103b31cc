"""Test wiring: the real app over ASGI, against the embedded (or real) MongoDB and Redis.

scripts/test starts the services and exports MONGO_URI and REDIS_URL; set them yourself to use
real servers. Every test gets empty collections and an empty Redis database.
"""

import os
import tempfile
import uuid

import pytest

if not os.environ.get("MONGO_URI") or not os.environ.get("REDIS_URL"):
    raise pytest.UsageError("MONGO_URI and REDIS_URL are not set: run the suite with scripts/test")

os.environ["ENVIRONMENT"] = "test"
os.environ["MONGO_DB"] = f"test_{uuid.uuid4().hex[:8]}"
os.environ["MAIL_BACKEND"] = "outbox"
# Every test registers from one client address; the attack tests lower this again.
os.environ["EMAIL_RATE_PER_IP_PER_HOUR"] = "100000"
os.environ["MAIL_OUTBOX_DIR"] = tempfile.mkdtemp(prefix="peertest-outbox-")

import httpx  # noqa: E402
from asgi_lifespan import LifespanManager  # noqa: E402

from app import db  # noqa: E402
from app.config import get_settings  # noqa: E402
from app.kit.redis import get_redis  # noqa: E402

pytest_plugins = ["tests.fixtures.factories", "tests.fixtures.faults"]


@pytest.fixture(scope="session")
async def app():
    from app.main import create_app

    application = create_app(get_settings())
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture(autouse=True)
async def clean_state(app):
    yield
    database = db.get_client()[get_settings().mongo_db]
    for name in await database.list_collection_names():
        await database[name].delete_many({})
    await get_redis().flushdb()
    for path in os.listdir(get_settings().mail_outbox_dir):
        os.remove(os.path.join(get_settings().mail_outbox_dir, path))


@pytest.fixture
def settings():
    """The live settings object; tests may change a field and it is restored afterwards."""
    live = get_settings()
    saved = live.model_dump()
    yield live
    for name, value in saved.items():
        object.__setattr__(live, name, value)
