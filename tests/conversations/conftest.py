"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL server the suite starts.

The server (see tests/utils/postgres.py and the `postgres_server` fixture in tests/conftest.py) starts
once per session, the first time a PostgreSQL test runs; each test gets a database of its own (`db_url`,
`engine`, `session`), and read-only tests may share one per module (`module_engine`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations.db import make_engine, upgrade_db
from tests.utils.postgres import PostgresServer

ENGINES = ["sqlite", "postgresql"]


@contextmanager
def new_database(kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a new, empty database of `kind`, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        upgrade_db(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a new, empty database on each engine."""
    with new_database(request.param, request, tmp_path_factory) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to the newest revision."""
    with migrated_engine(db_url) as engine:
        yield engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture(scope="module", params=ENGINES)
def module_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A migrated database shared by one module's tests on each engine; for tests that only read."""
    with new_database(request.param, request, tmp_path_factory) as url, migrated_engine(url) as engine:
        yield engine
