"""Fraud scoring, in the background.

Every new movement is queued in its own transaction (`post_journal` writes its
score_queue row). Each API process runs one `Scorer`: woken right after a movement's
response (and every BANK_FRAUD_SWEEP_SECONDS, for what a crash or another process left),
it leases a batch of queued movements, reads their features (bounded index reads:
app.store.fraud), runs the rules on them (app.services.rules), and stores every score,
its flag and the scorer's aggregates in one transaction that also deletes the batch's
queue rows, only for rows still leased to it. A movement is so scored exactly once,
whatever crashes and however many processes score; the customer's request never waits.

Flags fire once: a score at or above BANK_FRAUD_FLAG_SCORE opens a flag unless the
customer already has an open flag for one of the rules that fired, which the movement is
added to instead (and a movement any of whose rules has an open flag is added to it
whatever its score). A new flag for that rule opens only once that one is resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, Tx, session_tx, unit_of_work
from app.models import Flag, FlagKey, FlagStatus, ScoreQueue
from app.services import audit
from app.services.rules import OUTGOING, Features, RuleSet, Score, Windows
from app.store import fraud as fraud_store
from app.store.fraud import Lookups, Movement

log = logging.getLogger(__name__)

DAY = 86_400


def day_of(at: datetime) -> int:
    return int(at.timestamp()) // DAY


@dataclass(slots=True)
class BatchState:
    """What the earlier movements of one batch add to the scorer's aggregates before
    they are stored (so a batch scores as if one movement at a time)."""

    windows: Windows
    payees: dict[tuple[int, int], int] = field(default_factory=dict)
    days: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    buckets: dict[str, dict[int, int]] = field(default_factory=dict)  # key -> minute -> n

    def counted(self, key: str, first_minute: int, last_minute: int) -> int:
        """What earlier movements of the batch add to bucket `key` in the minutes range."""
        minutes = self.buckets.get(key)
        if not minutes:
            return 0
        return sum(n for minute, n in minutes.items() if first_minute < minute <= last_minute)

    def add(self, movement: Movement) -> None:
        minute = fraud_store.minute_of(movement.created_at)
        for key in bucket_keys(movement, self.windows):
            minutes = self.buckets.setdefault(key, {})
            minutes[minute] = minutes.get(minute, 0) + 1
        if movement.kind == "transfer" and movement.customer_id and movement.to_account_id:
            key = (movement.customer_id, movement.to_account_id)
            self.payees[key] = min(self.payees.get(key, movement.id), movement.id)
        if movement.kind in OUTGOING and movement.from_account_id is not None:
            key = (movement.from_account_id, day_of(movement.created_at))
            count, total = self.days.get(key, (0, 0))
            self.days[key] = (count + 1, total + movement.amount)


def bucket_keys(movement: Movement, windows: Windows) -> list[str]:
    """The minute buckets a movement counts in (once scored)."""
    keys = []
    if windows.band_min <= movement.amount <= windows.band_max and movement.customer_id:
        keys.append(fraud_store.band_key(windows.band_min, windows.band_max, movement.customer_id))
    if movement.kind == "transfer" and movement.from_account_id is not None:
        keys.append(fraud_store.transfers_key(movement.from_account_id))
    return keys


def suppressed_rules(
    movement: Movement,
    allowed: list[tuple[str, str, list[str]]],
    parties: dict[int, tuple[str, str, str | None]],
) -> list[str]:
    """The rule codes that allow-list entries naming a party of the movement (either
    account, its customer, or the customer's national id) suppress."""
    if not allowed:
        return []
    names: set[tuple[str, str]] = set()
    for account_id in (movement.from_account_id, movement.to_account_id):
        if account_id is not None and account_id in parties:
            number, customer, national = parties[account_id]
            names |= {("account", number), ("customer", customer)}
            if national:
                names.add(("national_id", national))
    codes = {code for kind, target, rules in allowed if (kind, target) in names for code in rules}
    return sorted(codes)


async def window_counts(tx: Tx, movement: Movement, windows: Windows) -> tuple[int, int]:
    """The customer's movements in the structuring band and window, and the source
    account's outgoing transfers in the velocity window (both including this one), read
    from the journals (the backtest's recount, with a candidate's windows)."""
    at = movement.created_at
    band_since = fraud_store.Window.back_from(at, windows.band_seconds).since
    velocity_since = fraud_store.Window.back_from(at, windows.velocity_seconds).since
    rows = await fraud_store.window(tx, movement, min(band_since, velocity_since))
    band_count = sum(
        1
        for row in rows
        if row.created_at >= band_since and windows.band_min <= row.amount <= windows.band_max
    )
    transfers = sum(
        1
        for row in rows
        if row.kind == "transfer"
        and row.from_account_id == movement.from_account_id
        and row.created_at >= velocity_since
    )
    return band_count, transfers


def lookup_query(movement: Movement, windows: Windows) -> fraud_store.LookupQuery:
    """What to read for `movement`: its windows counted back from its own time."""
    at = movement.created_at
    today = day_of(at)
    return fraud_store.LookupQuery(
        movement,
        (windows.band_min, windows.band_max),
        fraud_store.Window.back_from(at, windows.band_seconds),
        fraud_store.Window.back_from(at, windows.velocity_seconds),
        today - windows.unusual_days,
        today,
    )


def features_of(
    query: fraud_store.LookupQuery,
    found: Lookups,
    windows: Windows,
    *,
    batch: BatchState,
    suppressed: list[str],
) -> Features:
    """Everything the rules read about a movement: what the database said (`found`) plus
    what earlier movements of its batch add."""
    movement, band, velocity = query.movement, query.band_window, query.velocity_window
    at = movement.created_at
    first_day, today = query.first_day, query.last_day
    now = fraud_store.minute_of(at)
    own = bucket_keys(movement, windows)  # the movement itself, not in a bucket yet
    band_key = fraud_store.band_key(windows.band_min, windows.band_max, movement.customer_id)
    transfers_key = fraud_store.transfers_key(movement.from_account_id)
    band_count = (
        found.band_count + batch.counted(band_key, band.first_minute, now) + (band_key in own)
    )
    transfers = (
        found.transfers
        + batch.counted(transfers_key, velocity.first_minute, now)
        + (transfers_key in own)
    )
    outgoing = movement.kind in OUTGOING
    first_payee = None
    if movement.kind == "transfer":
        earlier = found.first_payment
        key = (movement.customer_id or 0, movement.to_account_id or 0)
        in_batch = batch.payees.get(key)
        first_payee = (earlier is None or earlier >= movement.id) and (
            in_batch is None or in_batch >= movement.id
        )
    count, total = found.out_count, found.out_total
    if outgoing:
        for (account_id, day), (n, amount) in batch.days.items():
            if account_id == movement.from_account_id and first_day <= day <= today:
                count, total = count + n, total + amount
    age = None
    if outgoing and movement.source_opened_at is not None:
        age = max(0, int((at - movement.source_opened_at).total_seconds()))
    return {
        "kind": movement.kind,
        "amount": movement.amount,
        "band_count": band_count,
        "transfers_in_window": transfers,
        "first_payee": first_payee,
        "prior_out_count": count if outgoing else None,
        "prior_out_total": total if outgoing else None,
        "account_age_seconds": age,
        "balance_before": movement.balance_before if outgoing else None,
        "destination_flag": found.destination_flag if movement.kind == "transfer" else None,
        "suppressed": suppressed,
    }


@dataclass(frozen=True, slots=True)
class Scored:
    movement: Movement
    features: Features
    score: Score


class Scorer:
    """The scoring runner of one process (see the module's docstring)."""

    def __init__(self, database: Database, rules: RuleSet) -> None:
        self.database = database
        self.rules = rules
        self.owner = secrets.token_hex(8)
        self._wake = asyncio.Event()
        self._rules_kept = False

    async def wake(self) -> None:
        """A movement committed: score it soon (run right after its response; a coroutine,
        so Starlette awaits it in the event loop instead of handing a plain function to its
        thread pool, which cost each movement a thread hop)."""
        self._wake.set()

    async def run(self) -> None:
        settings = self.database.settings
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=settings.fraud_sweep_seconds)
            # Let the movements of the next moments join the batch: under load, fewer and
            # larger batches cost less per score (the lag stays far inside its target).
            await asyncio.sleep(settings.fraud_linger_seconds)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fraud scoring failed; retrying shortly")
                await asyncio.sleep(settings.fraud_sweep_seconds)

    async def drain(self) -> int:
        """Score batches until the queue has nothing this process may take. Returns how
        many movements were scored."""
        scored = 0
        while True:
            count, claimed = await self.score_batch()
            scored += count
            if claimed < self.database.settings.fraud_batch_size:
                return scored

    async def score_batch(self) -> tuple[int, int]:
        """Lease, score and store one batch: (movements scored, movements claimed)."""
        settings = self.database.settings
        async with self.database.session() as db:
            now = datetime.now(UTC)
            lease = now + timedelta(seconds=settings.fraud_lease_seconds)
            async with unit_of_work(db) as tx:
                await fraud_store.commit_lazily(tx)
                ids = await fraud_store.claim_scoring(
                    tx, self.owner, now=now, lease_until=lease, limit=settings.fraud_batch_size
                )
            if not ids:
                return 0, 0
            try:
                results, batch = await self._score(db, ids)
                stored = await self._store(db, results, batch)
            except Exception:
                await self._release(db, ids)
                raise
        return stored, len(ids)

    async def _score(self, db: AsyncSession, ids: list[int]) -> tuple[list[Scored], BatchState]:
        tx = await session_tx(db)
        movements = await fraud_store.movements(tx, ids)
        allowed = await fraud_store.allow_entries(tx, datetime.now(UTC))
        parties = {}
        if allowed:
            accounts = [a for m in movements for a in (m.from_account_id, m.to_account_id) if a]
            parties = await fraud_store.parties(tx, accounts)
        windows = self.rules.windows
        batch = BatchState(windows)
        queries = [lookup_query(movement, windows) for movement in movements]
        found = await fraud_store.lookups(tx, queries)
        results = []
        for query, lookups in zip(queries, found, strict=True):
            movement = query.movement
            suppressed = suppressed_rules(movement, allowed, parties)
            features = features_of(query, lookups, windows, batch=batch, suppressed=suppressed)
            results.append(Scored(movement, features, self.rules.score(features)))
            batch.add(movement)
        return results, batch

    async def _store(self, db: AsyncSession, results: list[Scored], batch: BatchState) -> int:
        async with unit_of_work(db) as tx:
            await fraud_store.commit_lazily(tx)
            owned = await fraud_store.still_owned(tx, self.owner, [r.movement.id for r in results])
            if not self._rules_kept:
                await fraud_store.keep_rule_set(tx, self.rules.version, self.rules.content)
            scores = []
            flags = FlagBook(db, tx, self.rules, self.database.settings.fraud_flag_score)
            await flags.load_keys({r.movement.customer_id for r in results if r.score.reasons})
            for result in results:
                if result.movement.id not in owned:
                    continue
                flag_id = await flags.attach(result)
                scores.append(
                    fraud_store.NewScore(
                        result.movement.id,
                        result.score.score,
                        self.rules.version,
                        result.features,
                        [reason.as_dict() for reason in result.score.reasons],
                        flag_id,
                    )
                )
            # What the stored movements add to the aggregates (all of the batch, unless
            # another scorer took some over when this one's lease ran out).
            if len(owned) < len(results):
                batch = BatchState(self.rules.windows)
                for result in results:
                    if result.movement.id in owned:
                        batch.add(result.movement)
            await fraud_store.store_scores(
                tx,
                scores,
                payees=batch.payees,
                days=batch.days,
                buckets={
                    (key, minute): n
                    for key, minutes in batch.buckets.items()
                    for minute, n in minutes.items()
                },
            )
        self._rules_kept = True
        return len(scores)

    async def _release(self, db: AsyncSession, ids: list[int]) -> None:
        """Give a failed batch back to the queue at once (rather than after its lease)."""
        try:
            async with unit_of_work(db) as tx:
                await fraud_store.release_claims(tx, self.owner, ids)
        except Exception:
            log.exception("could not release scoring claims; their lease runs out")


class FlagBook:
    """Opens flags and adds movements to open ones, within the batch's transaction."""

    def __init__(self, db: AsyncSession, tx: Tx, rules: RuleSet, threshold: int) -> None:
        self.db = db
        self.tx = tx
        self.rules = rules
        self.threshold = threshold
        self.keys: dict[tuple[int, str], int] = {}  # (customer, rule code) -> open flag

    async def load_keys(self, customers: set[int | None]) -> None:
        """The open flags' keys of the batch's customers whose movements a rule fired on
        (one read for the batch). Two scorers opening a flag for the same key at once
        collide on its primary key: one batch fails, is released, and is scored again."""
        wanted = sorted(c for c in customers if c is not None)
        if wanted:
            self.keys = await fraud_store.open_flag_keys(self.tx, wanted)

    def _key(self, customer: int, codes: list[str], flag_id: int) -> None:
        """Make `flag_id` the open flag of the customer for these rule codes."""
        for code in codes:
            self.db.add(FlagKey(customer_id=customer, rule_code=code, flag_id=flag_id))
            self.keys[(customer, code)] = flag_id

    async def attach(self, result: Scored) -> int | None:
        """The flag the movement is on (None: none)."""
        movement, score = result.movement, result.score
        codes = score.codes
        customer = movement.customer_id
        if not codes or customer is None:
            return None
        held = {
            code: self.keys[(customer, code)] for code in codes if (customer, code) in self.keys
        }
        if not held and score.score < self.threshold:
            return None
        now = datetime.now(UTC)
        if held:
            flag = await self.db.get(Flag, min(held.values()), with_for_update=True)
            if (
                flag is None or flag.status != FlagStatus.open
            ):  # pragma: no cover - keys go with the flag
                return None
            reasons = {r["code"]: r for r in flag.reasons}
            reasons.update({r.code: r.as_dict() for r in score.reasons})
            flag.reasons = list(reasons.values())
            flag.rule_codes = sorted({*flag.rule_codes, *codes})
            flag.transaction_ids = [*flag.transaction_ids, movement.id]
            flag.score = max(flag.score, score.score)
            flag.updated_at = now
            self._key(customer, [code for code in codes if code not in held], flag.id)
            await self.db.flush()
            return flag.id
        flag = Flag(
            journal_id=movement.id,
            customer_id=movement.customer_id,
            account_id=movement.from_account_id or movement.to_account_id,
            score=score.score,
            rules_version=self.rules.version,
            rule_codes=sorted(codes),
            reasons=[reason.as_dict() for reason in score.reasons],
            transaction_ids=[movement.id],
            status=FlagStatus.open,
            created_at=now,
            updated_at=now,
        )
        self.db.add(flag)
        await self.db.flush()
        self._key(customer, codes, flag.id)
        await self.db.flush()
        await audit.record(
            self.tx,
            actor=audit.SYSTEM,
            action="fraud.flag_opened",
            entity_type="flag",
            entity_id=flag.id,
            details={
                "transaction_id": str(movement.id),
                "score": score.score,
                "rules": sorted(codes),
                "rules_version": self.rules.version,
            },
        )
        return flag.id


@dataclass(frozen=True, slots=True)
class ScoringQueue:
    queued: int
    oldest_seconds: float  # age of the oldest movement waiting for its score (0: none)


async def queue_stats(database: Database) -> ScoringQueue:
    """The scoring queue as a monitor sees it (score_queue stays short: rows leave with
    their score)."""
    async with database.session() as db:
        row = (await db.execute(select(func.count(), func.min(ScoreQueue.created_at)))).one()
    oldest = row[1]
    lag = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0
    return ScoringQueue(int(row[0]), lag)


async def drain_all(database: Database, rules: RuleSet) -> int:
    """Score everything queued (`bank fraud score`; a server's scorer does it by itself)."""
    return await Scorer(database, rules).drain()
