"""The driver connection under a transaction: prebuilt statements (`Sql`) run on the raw
sqlite3 / asyncpg connection, and writes sent together (one statement on PostgreSQL).

Through SQLAlchemy each money-path statement cost 0.3-0.9 ms of Python on this machine;
on the driver 10-50 microseconds (SQLite) or one network round trip (PostgreSQL). The
store (`app.store`) writes its SQL for `app.db.transactions.Tx`, which runs it here; the
group commit drives its savepoints here too.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

# An execution option that makes the connection's transaction a write transaction
# (SQLite: BEGIN IMMEDIATE, see app.db.engine).
WRITE_OPTION = "bank_write"

_TARGET = re.compile(
    r"^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:\w+\.)?(\w+)", re.IGNORECASE
)


class Sql:
    """One prebuilt statement, written once with `?` placeholders; PostgreSQL's text
    numbers them ($1, $2, …) unless given explicitly. A write knows the table it writes
    and whether it changes rows that exist (UPDATE, DELETE, an upsert), so writes that
    could see each other are never sent in one statement (see `Tx.write`). `disjoint`
    says that it never touches a row that another write of its transaction touches, so
    it may go with them anyway (the daily total's prune: minutes that left the window,
    never the minute being written)."""

    __slots__ = ("changes_rows", "disjoint", "postgresql", "sqlite", "table")

    def __init__(
        self, sqlite: str, postgresql: str | None = None, *, disjoint: bool = False
    ) -> None:
        self.sqlite = sqlite
        self.disjoint = disjoint
        if postgresql is None:
            head, *rest = sqlite.split("?")
            postgresql = head + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))
        self.postgresql = postgresql
        found = _TARGET.match(sqlite or postgresql)
        self.table = found.group(2).lower() if found else None
        verb = found.group(1).upper() if found else ""
        self.changes_rows = not verb.startswith("INSERT") or "DO UPDATE" in sqlite.upper()


def locking(query: str) -> Sql:
    """A SELECT that locks the rows it reads: FOR NO KEY UPDATE on PostgreSQL (as strong
    as FOR UPDATE between writers of the row, but a foreign key's check of it, which
    takes KEY SHARE, does not wait for it: inserting a row that references an account
    never queues behind a movement of that account); SQLite's writers
    take turns, so there the same text without it."""
    return Sql(query, Sql(query).postgresql + " FOR NO KEY UPDATE")


Write = tuple[Sql, tuple[Any, ...]]
"""A statement and its parameters."""


@functools.lru_cache(maxsize=256)
def fused(statements: tuple[Sql, ...], returning: Sql | None = None) -> tuple[str, tuple[int, ...]]:
    """PostgreSQL text running `statements` as one: each a data-modifying WITH query
    (executed exactly once, whether or not anything reads it), parameters numbered on;
    the row of `returning`, if given, is the statement's result. Returns the text and
    how many parameters each statement takes. Refuses what it could not nest safely: a
    statement with a WITH of its own, a `$` in a string literal."""
    parts, counts = [], []
    taken = 0
    for n, statement in enumerate((*statements, *([returning] if returning else []))):
        literals = statement.postgresql.split("'")[1::2]  # '' only splits one in two
        if statement.postgresql.lstrip()[:4].upper() == "WITH" or any("$" in x for x in literals):
            raise ValueError(f"cannot send together: {statement.postgresql[:60]}")
        numbers = [int(found) for found in re.findall(r"\$(\d+)", statement.postgresql)]
        text = re.sub(
            r"\$(\d+)", lambda m, at=taken: f"${int(m.group(1)) + at}", statement.postgresql
        )
        parts.append(f"w{n} AS ({text})")
        counts.append(max(numbers, default=0))
        taken += counts[-1]
    result = f"SELECT * FROM w{len(statements)}" if returning else "SELECT 1"  # noqa: S608
    return "WITH " + ", ".join(parts) + " " + result, tuple(counts)


class Driver:
    """The statements of one transaction on its driver connection (plain tuples back)."""

    is_sqlite: bool

    async def begin(self) -> None:
        """Make sure the transaction has started (SQLite: the unit of work began it)."""

    async def one(self, sql: Sql, *args: Any) -> Any:
        raise NotImplementedError

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def send(self, writes: list[Write], returning: Write | None = None) -> Any:
        """Run `writes`, then `returning` (a write whose first row is returned). SQLite
        runs them in turn, each a function call. PostgreSQL sends them as one statement,
        one network round trip: they then all see the statement's snapshot, not each
        other's rows (`Tx` only gives it writes that cannot tell). Constraints still
        hold across them: foreign keys are checked at the end of the statement, deferred
        triggers at COMMIT."""
        raise NotImplementedError

    def timestamp(self, value: datetime) -> Any:
        """A UTC datetime as the engine stores it (the format SQLAlchemy uses)."""
        return value

    def json(self, value: Any) -> Any:
        """A JSON column's value as read (the asyncpg codec SQLAlchemy installs already
        decodes it; sqlite3 returns the text)."""
        return value

    def read_time(self, value: Any) -> datetime | None:
        """A timestamp column's value as read, as an aware UTC datetime (None stays None;
        asyncpg returns aware datetimes, sqlite3 the text `timestamp` wrote)."""
        return value.astimezone(UTC) if value is not None else None


class SQLiteDriver(Driver):
    is_sqlite = True

    def __init__(self, connection: Any) -> None:
        self._connection = connection  # sqlite3.Connection

    async def one(self, sql: Sql, *args: Any) -> Any:
        return self._connection.execute(sql.sqlite, args).fetchone()

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        return self._connection.execute(sql.sqlite, args).fetchall()

    async def send(self, writes: list[Write], returning: Write | None = None) -> Any:
        for sql, args in writes:
            self._connection.execute(sql.sqlite, args)
        if returning is not None:
            return self._connection.execute(returning[0].sqlite, returning[1]).fetchone()
        return None

    def execute_plain(self, statement: str) -> None:
        self._connection.execute(statement)

    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def timestamp(self, value: datetime) -> Any:
        if value.tzinfo is None:  # as UTCDateTime does: never guess a naive time's zone
            raise ValueError("naive datetime given to a UTC column")
        # "%Y-%m-%d %H:%M:%S.%f", the format SQLAlchemy stores, at half strftime's cost
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def json(self, value: Any) -> Any:
        return orjson.loads(value)

    def read_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value).replace(tzinfo=UTC)


class PostgresDriver(Driver):
    is_sqlite = False

    def __init__(self, adapted: Any) -> None:
        self._adapted = adapted  # SQLAlchemy's asyncpg adapter: it tracks the transaction
        self._connection = adapted.driver_connection

    async def begin(self) -> None:
        # SQLAlchemy's adapter sends BEGIN lazily, with its first statement; a unit of
        # work whose first statement goes through here must start it the same way.
        if self._adapted._transaction is None:
            await self._adapted._start_transaction()

    async def one(self, sql: Sql, *args: Any) -> Any:
        return await self._connection.fetchrow(sql.postgresql, *args)

    async def all(self, sql: Sql, *args: Any) -> list[Any]:
        return await self._connection.fetch(sql.postgresql, *args)

    async def send(self, writes: list[Write], returning: Write | None = None) -> Any:
        if returning is None and len(writes) == 1:  # as it is: keeps its prepared statement
            ((sql, args),) = writes
            await self._connection.execute(sql.postgresql, *args)
            return None
        if returning is not None and not writes:
            return await self._connection.fetchrow(returning[0].postgresql, *returning[1])
        statements = tuple(sql for sql, _ in writes)
        text, counts = fused(statements, returning[0] if returning else None)
        given = [*writes, *([returning] if returning else [])]
        if tuple(len(values) for _, values in given) != counts:
            raise ValueError(f"parameters given do not match the placeholders {counts}")
        values = [value for _, args in given for value in args]
        if returning is None:
            await self._connection.execute(text, *values)
            return None
        return await self._connection.fetchrow(text, *values)


_DRIVER_KEY = "bank_driver"


async def driver_of(connection: AsyncConnection) -> Driver:
    """The `Driver` of a SQLAlchemy connection's current transaction (begun if need be)."""
    found = connection.info.get(_DRIVER_KEY)
    if found is None:
        raw = await connection.get_raw_connection()
        if connection.dialect.name == "sqlite":
            found = SQLiteDriver(raw.driver_connection.sqlite_connection)
        else:
            found = PostgresDriver(raw.dbapi_connection)
        connection.info[_DRIVER_KEY] = found
    await found.begin()
    return found
