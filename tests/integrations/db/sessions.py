"""One transaction-minded session per PostgreSQL driver, each behind the same synchronous face.

Every session connects with its own ``application_name`` so that ``pg_stat_activity`` finds its
backend, and sends its statements the way an application of that driver would. The asynchronous
ones run on an event loop of their own (``asyncio.Runner``) kept for the session's life.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import psycopg2
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integrations.db.pg import DSN

SA_URL = DSN.replace("postgresql://", "postgresql+{driver}://")


class Session:
    """A connection that runs statements and ends transactions like an application would."""

    def __init__(self) -> None:
        self.app_name = f"buttress-txn-{uuid.uuid4().hex[:12]}"

    def execute(self, sql: str) -> None:
        """Run *sql* the driver's usual way (inside the current transaction, if any)."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start a transaction (a no-op where the driver begins one by itself)."""

    def commit(self) -> None:
        """Commit with the driver's method (not a statement)."""
        raise NotImplementedError

    def rollback(self) -> None:
        """Roll back with the driver's method (not a statement)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (and its engine or event loop)."""


class _Async(Session):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()

    def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        async def wait() -> Any:
            return await make()

        return self.runner.run(wait())

    def close(self) -> None:
        self.runner.close()


class Psycopg(Session):
    """psycopg 3, not in autocommit mode: the first statement begins the transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(DSN, application_name=self.app_name)

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


class AsyncPsycopg(_Async):
    """psycopg 3's AsyncConnection."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = self.run(
            lambda: psycopg.AsyncConnection.connect(DSN, application_name=self.app_name)
        )

    def execute(self, sql: str) -> None:
        self.run(lambda: self.conn.execute(sql))

    def commit(self) -> None:
        self.run(self.conn.commit)

    def rollback(self) -> None:
        self.run(self.conn.rollback)

    def close(self) -> None:
        self.run(self.conn.close)
        super().close()


class Psycopg2(Session):
    """psycopg2 with a cursor, as most applications use it."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg2.connect(DSN, application_name=self.app_name)
        self.cur = self.conn.cursor()

    def execute(self, sql: str) -> None:
        self.cur.execute(sql)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.cur.close()
        self.conn.close()


class Asyncpg(_Async):
    """asyncpg: its methods are a ``Transaction``'s, whose COMMIT goes through execute()."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = self.run(
            lambda: asyncpg.connect(DSN, server_settings={"application_name": self.app_name})
        )
        self.transaction: Any = None

    def execute(self, sql: str) -> None:
        self.run(lambda: self.conn.execute(sql))

    def begin(self) -> None:
        self.transaction = self.conn.transaction()
        self.run(self.transaction.start)

    def commit(self) -> None:
        self.run(self.transaction.commit)

    def rollback(self) -> None:
        self.run(self.transaction.rollback)

    def close(self) -> None:
        self.run(self.conn.close)
        super().close()


class SQLAlchemy(Session):
    """A synchronous engine: ``text()`` statements, ``Connection.commit()``/``rollback()``."""

    def __init__(self, driver: str) -> None:
        super().__init__()
        self.engine = sqlalchemy.create_engine(
            SA_URL.format(driver=driver),
            connect_args={"application_name": self.app_name},
            poolclass=sqlalchemy.NullPool,
        )
        self.conn = self.engine.connect()

    def execute(self, sql: str) -> None:
        self.conn.execute(text(sql))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


class AsyncSQLAlchemy(_Async):
    """An asyncio engine (asyncpg or psycopg): ``AsyncConnection.commit()``/``rollback()``."""

    def __init__(self, driver: str) -> None:
        super().__init__()
        settings: dict[str, Any] = (
            {"server_settings": {"application_name": self.app_name}}
            if driver == "asyncpg"
            else {"application_name": self.app_name}
        )
        self.engine = create_async_engine(
            SA_URL.format(driver=driver), connect_args=settings, poolclass=sqlalchemy.NullPool
        )
        self.conn = self.run(self.engine.connect)

    def execute(self, sql: str) -> None:
        self.run(lambda: self.conn.execute(text(sql)))

    def commit(self) -> None:
        self.run(self.conn.commit)

    def rollback(self) -> None:
        self.run(self.conn.rollback)

    def close(self) -> None:
        self.run(self.conn.close)
        self.run(self.engine.dispose)
        super().close()


SESSIONS: dict[str, Callable[[], Session]] = {
    "psycopg": Psycopg,
    "psycopg-async": AsyncPsycopg,
    "psycopg2": Psycopg2,
    "asyncpg": Asyncpg,
    "sqlalchemy-psycopg2": lambda: SQLAlchemy("psycopg2"),
    "sqlalchemy-psycopg": lambda: SQLAlchemy("psycopg"),
    "sqlalchemy-asyncpg": lambda: AsyncSQLAlchemy("asyncpg"),
    "sqlalchemy-psycopg-async": lambda: AsyncSQLAlchemy("psycopg"),
}
"""Every PostgreSQL session kind under test, by name."""
