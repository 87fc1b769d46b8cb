import pytest


@pytest.fixture(autouse=True)
def _services(stack):
    """Every integration test runs against the session's real broker and database."""
    return stack
