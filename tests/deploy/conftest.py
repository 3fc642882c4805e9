"""Deployment fixtures: a private PostgreSQL server (as the store tests use) and a fresh database on it per test."""

from collections.abc import Iterator

import pytest

from tests.utils.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def deploy_postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(deploy_postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = deploy_postgres.create_database()
    try:
        yield deploy_postgres.url(name)
    finally:
        deploy_postgres.drop_database(name)
