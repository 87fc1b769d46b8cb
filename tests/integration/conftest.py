import pytest

from ingest_api import create_app


@pytest.fixture(autouse=True)
def _services(stack):
    """Every integration test runs against the session's real broker and database."""
    return stack


@pytest.fixture(scope="module")
def app():
    """The ingest API in-process, with the anonymous rate limits out of the way."""
    return create_app(
        {"TESTING": True, "RATE_LIMIT_MEMBERS": "1000/minute", "RATE_LIMIT_REPORTS": "1000/minute"}
    )


@pytest.fixture
def client(app):
    return app.test_client()
