"""Fixtures for the PostgreSQL integrations: the real server on 127.0.0.1:5432 and real faults.

Attempts are counted at the server: each test gets its own sequence, and the statements under
test call a function that takes its ``nextval`` (sequences are not transactional, so a
rolled-back or killed statement still counts). Faults are real: a statement that ends its own session with
``pg_terminate_backend(pg_backend_pid())`` (the client gets 57P01 admin shutdown), a port
where nothing listens, and a TCP proxy that drops its first connections.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.integrations.db.pg import (
    BASE_CONFIG,
    DB_INTEGRATIONS,
    DSN,
    HOST,
    PORT,
    Admin,
    Counter,
    FlakyProxy,
    PrivateCluster,
    patched_now,
    toml_value,
    unreachable,
)

from buttress import _activation, integrations


@pytest.fixture(scope="session")
def postgres() -> str:
    """The DSN of the real server; skips the test when PostgreSQL is not reachable."""
    reason = unreachable()
    if reason is not None:
        pytest.skip(reason)
    return DSN


@pytest.fixture
def activate_db(tmp_path: Path, postgres: str) -> Iterator[Callable[..., None]]:
    """
    A factory: ``activate_db(config={...}, **env)`` switches buttress on with ``[defaults.db]``.

    A key set to None in *config* is left out (the db template's value applies); *env* adds
    variables (``BUTTRESS_MODE="observe"``, ``BUTTRESS_TIMEOUT_ATTEMPT="1"``...).
    """
    sdk_checked = _activation._sdk_checked

    def activate(config: Mapping[str, Any] | None = None, **env: str) -> None:
        _activation.deactivate()
        values = {**BASE_CONFIG, **(config or {})}
        lines = ["[defaults.db]"]
        lines += [f"{key} = {toml_value(v)}" for key, v in values.items() if v is not None]
        path = tmp_path / "buttress.toml"
        path.write_text("\n".join(lines) + "\n")
        environ = {
            "BUTTRESS_ENABLED": "true",
            "BUTTRESS_CONFIG": str(path),
            "BUTTRESS_STRICT": "true",
            **env,
        }
        assert True is _activation.activate(environ, owns_sdk=False)
        # Post-import hooks are registered once per process (see tests/integrations/conftest.py):
        # do what they do for the libraries already imported.
        for name in DB_INTEGRATIONS:
            integration = integrations.get(name)
            if integration is not None and _activation.current().wants(name):
                integration.instrument()

    try:
        yield activate
    finally:
        _activation.deactivate()
        _activation._sdk_checked = sdk_checked
        assert [] == patched_now(), "still patched after deactivate()"


@pytest.fixture
def activated(activate_db: Callable[..., None]) -> None:
    """buttress switched on with :data:`BASE_CONFIG`, off again afterwards."""
    activate_db()


@pytest.fixture
def admin(postgres: str) -> Iterator[Admin]:
    """An admin connection to the test database."""
    a = Admin()
    yield a
    a.close()


@pytest.fixture
def counter(admin: Admin) -> Iterator[Counter]:
    """A fresh attempt counter (a sequence), dropped after the test."""
    c = Counter(admin)
    yield c
    c.drop()


@pytest.fixture
def spare_port() -> Iterator[int]:
    """A port bound to a socket that does not listen: connecting there is refused."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def flaky_proxy() -> Iterator[Callable[..., FlakyProxy]]:
    """A factory of :class:`FlakyProxy`; every proxy is closed after the test."""
    made: list[FlakyProxy] = []

    def make(drops: int, upstream: int = PORT) -> FlakyProxy:
        proxy = FlakyProxy(drops, upstream)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture(scope="session")
def password_server() -> Iterator[PrivateCluster]:
    """A private PostgreSQL that checks passwords (the shared one trusts local connections)."""
    cluster = PrivateCluster()
    try:
        reason = cluster.start()
        if reason is not None:
            pytest.skip(f"cannot start a private PostgreSQL: {reason}")
        yield cluster
    finally:
        cluster.stop()
