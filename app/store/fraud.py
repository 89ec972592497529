"""Fraud detection's tables as the money path and the scorer use them: holds, the
scoring queue, the features a score reads, and the score's writes (tables holds,
score_queue, fraud_scores, fraud_buckets, fraud_payees, fraud_account_days,
journals.flagged).

Every feature is read from the scorer's own aggregates, in key or short range reads: a
window count sums at most one fraud_buckets row per minute of the window, the first-
payee test is one key of fraud_payees, the 30-day average at most 31 rows of
fraud_account_days. A score so costs the same at 10 or 100,000 prior movements, and at
any traffic. (The backtest recounts windows from the journals instead, at most
`WINDOW_ROWS` of a customer's newest in the window.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.db import Sql, Tx

WINDOW_ROWS = 1000
"""A window count reads at most this many of the customer's newest movements in it."""

_ADD_HOLD = Sql(
    "INSERT INTO holds (journal_id, customer_id, account_id, amount, status, expires_at,"
    " created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)"
)


async def add_hold(
    tx: Tx,
    journal_id: int,
    customer_id: int | None,
    account_id: int,
    amount: int,
    *,
    expires_at: datetime,
) -> None:
    """File the hold of a held journal (its amount is already held by `post_journal`)."""
    now = tx.timestamp(datetime.now(UTC))
    await tx.write(
        _ADD_HOLD, journal_id, customer_id, account_id, amount, tx.timestamp(expires_at), now
    )


# The hold first: whoever locks it decides; the other finds it decided.
_HOLD = (
    "SELECT h.status, h.amount, h.customer_id, j.kind, j.currency, j.description,"
    " j.created_at, src.number, dst.number FROM holds h JOIN journals j ON j.id = h.journal_id"
    " JOIN accounts src ON src.id = j.from_account_id"
    " LEFT JOIN accounts dst ON dst.id = j.to_account_id WHERE h.journal_id = ?"
)
_LOCK_HOLD = Sql(_HOLD, Sql(_HOLD).postgresql + " FOR UPDATE OF h")
_DECIDE_HOLD = Sql(
    "UPDATE holds SET status = ?, decided_by = ?, decided_at = ?, reason = ? WHERE journal_id = ?"
)


@dataclass(frozen=True, slots=True)
class LockedHold:
    status: str
    amount: int
    customer_id: int | None
    kind: str
    currency: str
    description: str | None
    created_at: datetime
    source: str  # account numbers
    target: str | None


async def lock_hold(tx: Tx, journal_id: int) -> LockedHold | None:
    """Lock a held journal's hold (before its customer and accounts) and read it."""
    row = await tx.one(_LOCK_HOLD, journal_id)
    if row is None:
        return None
    return LockedHold(*row[:6], tx.read_time(row[6]), row[7], row[8])


async def decide_hold(
    tx: Tx, journal_id: int, status: str, decided_by: str | None, reason: str | None
) -> None:
    now = tx.timestamp(datetime.now(UTC))
    await tx.write(_DECIDE_HOLD, status, decided_by, now, reason, journal_id)


# --- the scoring queue -------------------------------------------------------------

_CLAIM_TEXT = (
    "UPDATE score_queue SET owner = ?, lease_until = ? WHERE journal_id IN"
    " (SELECT journal_id FROM score_queue WHERE lease_until IS NULL OR lease_until < ?"
    " ORDER BY journal_id LIMIT ?{lock}) RETURNING journal_id"
)
# Several processes claim at once on PostgreSQL: each skips the rows another is claiming.
_CLAIM = Sql(
    _CLAIM_TEXT.format(lock=""), Sql(_CLAIM_TEXT.format(lock=" FOR UPDATE SKIP LOCKED")).postgresql
)


_LAZY_COMMIT = Sql("SELECT 1", "SET LOCAL synchronous_commit TO OFF")


async def commit_lazily(tx: Tx) -> None:
    """PostgreSQL: this transaction's COMMIT does not wait for its WAL to reach the disk.
    For the scorer's transactions only, where that is safe: a claim or a score lost to a
    crash of the database is lost with its queue row's change, all or nothing, so the
    movement is simply scored again (SQLite: the group commit's fsync is shared anyway)."""
    if not tx.is_sqlite:
        await tx.write(_LAZY_COMMIT)


async def claim_scoring(
    tx: Tx, owner: str, *, now: datetime, lease_until: datetime, limit: int
) -> list[int]:
    """Lease up to `limit` queued movements (none leased, or whose lease ran out) to
    `owner`; their ids, oldest first."""
    rows = await tx.all(_CLAIM, owner, tx.timestamp(lease_until), tx.timestamp(now), limit)
    return sorted(row[0] for row in rows)


@functools.cache
def _marks(count: int) -> str:
    return ", ".join("?" * count)


@functools.cache
def _in(query: str, count: int) -> Sql:
    return Sql(query.replace("(…)", f"({_marks(count)})"))


@dataclass(frozen=True, slots=True)
class Movement:
    """A journal as the scorer reads it."""

    id: int
    kind: str
    amount: int
    currency: str
    customer_id: int | None
    from_account_id: int | None
    to_account_id: int | None
    created_at: datetime
    source_opened_at: datetime | None
    balance_before: int | None


_MOVEMENTS = (
    "SELECT j.id, j.kind, j.amount, j.currency, j.customer_id, j.from_account_id,"
    " j.to_account_id, j.created_at, src.opened_at,"
    " (SELECT e.balance_after FROM entries e WHERE e.account_id = j.from_account_id"
    "  AND e.journal_id < j.id ORDER BY e.journal_id DESC LIMIT 1)"
    " FROM journals j LEFT JOIN accounts src ON src.id = j.from_account_id"
    " WHERE j.id IN (…) ORDER BY j.id"
)


async def movements(tx: Tx, ids: list[int]) -> list[Movement]:
    rows = await tx.all(_in(_MOVEMENTS, len(ids)), *ids)
    return [
        Movement(
            *row[:7],
            tx.read_time(row[7]),
            tx.read_time(row[8]),
            (row[9] or 0) if row[5] is not None else None,
        )
        for row in rows
    ]


# The customer's newest movements in the window, this one included (ids above it, which
# committed later, are left out).
_WINDOW = Sql(
    "SELECT kind, amount, from_account_id, created_at FROM journals"  # noqa: S608 (constants)
    " WHERE customer_id = ? AND created_at >= ? AND created_at <= ? AND id <= ?"
    " AND status <> 'rejected' AND kind IN ('deposit', 'withdrawal', 'transfer')"
    f" ORDER BY created_at DESC LIMIT {WINDOW_ROWS}"
)


@dataclass(frozen=True, slots=True)
class WindowRow:
    kind: str
    amount: int
    from_account_id: int | None
    created_at: datetime


async def window(tx: Tx, movement: Movement, since: datetime) -> list[WindowRow]:
    if movement.customer_id is None:
        return []
    rows = await tx.all(
        _WINDOW,
        movement.customer_id,
        tx.timestamp(since),
        tx.timestamp(movement.created_at),
        movement.id,
    )
    return [WindowRow(row[0], row[1], row[2], tx.read_time(row[3])) for row in rows]


# Everything the scores of a batch read, in one statement: per movement (a row of
# `m`), window counts from the scorer's minute buckets, the first payment to the payee,
# the 30-day outgoing figures, the destination's flags. Each a key or short range read.
_M_COLUMNS = (
    ("i", "INT"),
    ("c", "BIGINT"),  # customer
    ("bk", "TEXT"),  # band bucket key
    ("bf", "BIGINT"),  # the minute before the band window
    ("nm", "BIGINT"),  # the movement's minute
    ("jid", "BIGINT"),
    ("lo", "BIGINT"),
    ("hi", "BIGINT"),
    ("tk", "TEXT"),  # transfers bucket key
    ("vf", "BIGINT"),  # the minute before the velocity window
    ("src", "BIGINT"),
    ("dst", "BIGINT"),
    ("fd", "INT"),  # first and last day of the 30-day figures
    ("ld", "INT"),
)
_FEATURES_SELECT = ", ".join(
    [
        "m.i",
        "(SELECT COALESCE(SUM(count), 0) FROM fraud_buckets"
        " WHERE key = m.bk AND minute > m.bf AND minute <= m.nm)",
        "(SELECT COALESCE(SUM(count), 0) FROM fraud_buckets"
        " WHERE key = m.tk AND minute > m.vf AND minute <= m.nm)",
        "(SELECT first_journal_id FROM fraud_payees"
        " WHERE customer_id = m.c AND account_id = m.dst)",
        "(SELECT COALESCE(SUM(count), 0) FROM fraud_account_days"
        " WHERE account_id = m.src AND day >= m.fd AND day <= m.ld)",
        "(SELECT COALESCE(SUM(total), 0) FROM fraud_account_days"
        " WHERE account_id = m.src AND day >= m.fd AND day <= m.ld)",
        "(SELECT MAX(CASE WHEN decision = 'fraud' THEN 2 ELSE 1 END) FROM fraud_flags"
        " WHERE account_id = m.dst AND (status = 'open' OR decision = 'fraud'))",
    ]
)


@functools.cache
def _features_sql(rows: int) -> Sql:
    """The statement for `rows` movements (a power of two: few texts to prepare)."""
    names = ", ".join(name for name, _ in _M_COLUMNS)
    plain = "(" + ", ".join("?" * len(_M_COLUMNS)) + ")"
    cast = "(" + ", ".join(f"CAST(? AS {kind})" for _, kind in _M_COLUMNS) + ")"
    tail = f") SELECT {_FEATURES_SELECT} FROM m"  # noqa: S608 (constants and placeholders)
    sqlite = f"WITH m({names}) AS (VALUES " + ", ".join([plain] * rows) + tail
    postgresql = f"WITH m({names}) AS (VALUES " + ", ".join([cast] * rows) + tail
    return Sql(sqlite, Sql(postgresql).postgresql)


def band_key(band_min: int, band_max: int, customer_id: int | None) -> str:
    return f"b:{band_min}:{band_max}:{customer_id}"


def transfers_key(account_id: int | None) -> str:
    return f"t:{account_id}"


def minute_of(at: datetime) -> int:
    return int(at.timestamp()) // 60


@dataclass(frozen=True, slots=True)
class Window:
    """A window of whole UTC minutes counted back from a movement: its own minute and the
    ones before it, `seconds` // 60 in all (a 10-minute window at 12:34:56 is 12:25:00 to
    the movement). Counted from the scorer's minute buckets: at most one row per minute,
    whatever the history or the traffic."""

    first_minute: int  # the last minute before the window
    since: datetime  # where the window starts

    @classmethod
    def back_from(cls, at: datetime, seconds: int) -> Window:
        first = minute_of(at) - seconds // 60
        return cls(first, datetime.fromtimestamp((first + 1) * 60, UTC))


@dataclass(frozen=True, slots=True)
class Lookups:
    band_count: int  # scored movements of the customer in the band, before this one
    transfers: int  # scored outgoing transfers of the account, before this one
    first_payment: int | None  # the customer's first journal to the destination, if any
    out_count: int  # the source account's scored outgoing movements in the day range
    out_total: int
    destination_flag: str | None  # "open" | "fraud"


@dataclass(frozen=True, slots=True)
class LookupQuery:
    movement: Movement
    band: tuple[int, int]
    band_window: Window
    velocity_window: Window
    first_day: int
    last_day: int


async def lookups(tx: Tx, queries: list[LookupQuery]) -> list[Lookups]:
    """What each movement's score reads (in the order of `queries`), one statement for the
    batch."""
    found: list[Lookups] = []
    for start in range(0, len(queries), FEATURE_ROWS):
        found += await _lookups(tx, queries[start : start + FEATURE_ROWS])
    return found


FEATURE_ROWS = 256


async def _lookups(tx: Tx, queries: list[LookupQuery]) -> list[Lookups]:
    rows = 1 << max(0, len(queries) - 1).bit_length()
    values: list[Any] = []
    for i, q in enumerate(queries):
        m, src, dst = q.movement, q.movement.from_account_id, q.movement.to_account_id
        values += (
            i,
            m.customer_id,
            band_key(*q.band, m.customer_id),
            q.band_window.first_minute,
            minute_of(m.created_at),
            m.id,
            *q.band,
            transfers_key(src),
            q.velocity_window.first_minute,
            src,
            dst,
            q.first_day,
            q.last_day,
        )
    values += [None] * (len(_M_COLUMNS) * (rows - len(queries)))  # padding rows: i is NULL
    out: list[Lookups | None] = [None] * len(queries)
    for row in await tx.all(_features_sql(rows), *values):
        if row[0] is None:
            continue
        flag = {1: "open", 2: "fraud"}.get(row[6]) if row[6] is not None else None
        out[row[0]] = Lookups(int(row[1]), int(row[2]), row[3], int(row[4]), int(row[5]), flag)
    assert all(item is not None for item in out)
    return out  # type: ignore[return-value]


_ALLOWED = Sql(
    "SELECT target_type, target, rules FROM fraud_lists WHERE list_kind = 'allow'"
    " AND (expires_at IS NULL OR expires_at > ?)"
)


async def allow_entries(tx: Tx, now: datetime) -> list[tuple[str, str, list[str]]]:
    """The live allow-list entries (a short list, read once per batch)."""
    rows = await tx.all(_ALLOWED, tx.timestamp(now))
    return [(row[0], row[1], list(tx.json(row[2]) or ())) for row in rows]


_PARTIES = (
    "SELECT a.id, a.number, a.customer_id, c.national_id_hmac FROM accounts a"
    " LEFT JOIN customers c ON c.id = a.customer_id WHERE a.id IN (…)"
)


async def parties(tx: Tx, account_ids: Iterable[int]) -> dict[int, tuple[str, str, str | None]]:
    """Each account's number, customer id and national-id hash (for allow entries)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = await tx.all(_in(_PARTIES, len(ids)), *ids)
    return {row[0]: (row[1], str(row[2]), row[3]) for row in rows}


# --- the score's writes ------------------------------------------------------------

_RELEASE = (
    "UPDATE score_queue SET owner = NULL, lease_until = NULL WHERE owner = ? AND journal_id IN (…)"
)


async def release_claims(tx: Tx, owner: str, ids: list[int]) -> None:
    await tx.write(_in(_RELEASE, len(ids)), owner, *ids)


_OWNED = "SELECT journal_id FROM score_queue WHERE owner = ? AND journal_id IN (…)"


async def still_owned(tx: Tx, owner: str, ids: list[int]) -> set[int]:
    """Which of `ids` are still leased to `owner`, locked until COMMIT: another scorer
    that took over an expired lease cannot store the same score too."""
    sql = _in(_OWNED, len(ids))
    locked = Sql(sql.sqlite, sql.postgresql + " FOR UPDATE")
    return {row[0] for row in await tx.all(locked, owner, *ids)}


@functools.cache
def _scores_sql(count: int) -> Sql:
    rows = ", ".join("(?, ?, ?, ?, ?, ?, ?)" for _ in range(count))
    return Sql(
        "INSERT INTO fraud_scores (journal_id, score, rules_version, features, reasons,"  # noqa: S608
        f" flag_id, scored_at) VALUES {rows}"
    )


@dataclass(frozen=True, slots=True)
class NewScore:
    journal_id: int
    score: int
    rules_version: str
    features: dict[str, Any]
    reasons: list[dict[str, Any]]
    flag_id: int | None


UPSERT_ROWS = 100  # rows per multi-row upsert (keys distinct within one)


@functools.cache
def _upsert_sql(
    table: str, columns: str, conflict: str, update: str, pg_update: str, rows: int
) -> Sql:
    width = columns.count(",") + 1
    values = ", ".join("(" + ", ".join("?" * width) + ")" for _ in range(rows))
    text = (
        f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT ({conflict}) DO UPDATE SET "  # noqa: S608
    )
    return Sql(text + update, Sql(text + pg_update).postgresql)


_PAYEES = (
    "fraud_payees",
    "customer_id, account_id, first_journal_id",
    "customer_id, account_id",
    "first_journal_id = MIN(fraud_payees.first_journal_id, excluded.first_journal_id)",
    "first_journal_id = LEAST(fraud_payees.first_journal_id, excluded.first_journal_id)",
)
_DAYS = (
    "fraud_account_days",
    "account_id, day, count, total",
    "account_id, day",
    "count = fraud_account_days.count + excluded.count,"
    " total = fraud_account_days.total + excluded.total",
    "count = fraud_account_days.count + excluded.count,"
    " total = fraud_account_days.total + excluded.total",
)
_BUCKETS = (
    "fraud_buckets",
    "key, minute, count",
    "key, minute",
    "count = fraud_buckets.count + excluded.count",
    "count = fraud_buckets.count + excluded.count",
)


async def _upsert(tx: Tx, shape: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Rows in key order: scorers of several processes that upsert the same rows then wait
    for one another instead of deadlocking."""
    rows = sorted(rows)
    for start in range(0, len(rows), UPSERT_ROWS):
        chunk = rows[start : start + UPSERT_ROWS]
        await tx.write(_upsert_sql(*shape, len(chunk)), *(value for row in chunk for value in row))


_FLAGGED = "UPDATE journals SET flagged = ? WHERE id IN (…)"
_DEQUEUE = "DELETE FROM score_queue WHERE journal_id IN (…)"


async def store_scores(
    tx: Tx,
    scores: list[NewScore],
    *,
    payees: dict[tuple[int, int], int],
    days: dict[tuple[int, int], tuple[int, int]],
    buckets: dict[tuple[str, int], int],
) -> None:
    """The scores of a batch, their movements' `flagged`, the scorer's aggregates, and
    the queue rows they leave."""
    if not scores:
        return
    now = tx.timestamp(datetime.now(UTC))
    values: list[Any] = []
    for s in scores:
        features = orjson.dumps(s.features).decode()
        reasons = orjson.dumps(s.reasons).decode()
        values += (s.journal_id, s.score, s.rules_version, features, reasons, s.flag_id, now)
    await tx.write(_scores_sql(len(scores)), *values)
    for flagged in (True, False):
        ids = [s.journal_id for s in scores if (s.flag_id is not None) is flagged]
        if ids:
            await tx.write(_in(_FLAGGED, len(ids)), flagged, *ids)
    await _upsert(tx, _PAYEES, [(*key, journal_id) for key, journal_id in payees.items()])
    await _upsert(tx, _DAYS, [(*key, *figures) for key, figures in days.items()])
    await _upsert(tx, _BUCKETS, [(*key, count) for key, count in buckets.items()])
    ids = [s.journal_id for s in scores]
    await tx.write(_in(_DEQUEUE, len(ids)), *ids)


_FLAG_KEYS = "SELECT customer_id, rule_code, flag_id FROM fraud_flag_keys WHERE customer_id IN (…)"


async def open_flag_keys(tx: Tx, customers: list[int]) -> dict[tuple[int, str], int]:
    """The open flag of each (customer, rule code) of these customers."""
    rows = await tx.all(_in(_FLAG_KEYS, len(customers)), *customers)
    return {(row[0], row[1]): row[2] for row in rows}


_RULE_SET = Sql(
    "INSERT INTO fraud_rule_sets (version, content, created_at) VALUES (?, ?, ?)"
    " ON CONFLICT (version) DO NOTHING"
)


async def keep_rule_set(tx: Tx, version: str, content: str) -> None:
    await tx.write(_RULE_SET, version, content, tx.timestamp(datetime.now(UTC)))
