"""Payment tests drive a builder's wallet too."""

from tests.wallet.conftest import wallet  # noqa: F401
