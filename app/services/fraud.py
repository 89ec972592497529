"""Fraud review: the flags admins work (list, detail, assign, resolve), the explanation
of a score (its stored features re-scored by its own rule set), block and allow lists,
and the backtest of a candidate rule set against the bank's own history."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, cast, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, read_snapshot, retry_on_conflict, session_tx, unit_of_work
from app.errors import (
    AccountNotFound,
    AlreadyDecided,
    CustomerNotFound,
    FlagNotFound,
    ListEntryNotFound,
    ValidationFailed,
)
from app.models import (
    Account,
    AccountStatus,
    Customer,
    Flag,
    FlagDecision,
    FlagKey,
    FlagStatus,
    FraudScore,
    Journal,
    ListEntry,
)
from app.models import (
    RuleSet as StoredRuleSet,
)
from app.schemas.common import day_start
from app.security import Principal
from app.services import accounts, audit, blocks, conflicts
from app.services.audit import Actor
from app.services.customers import national_id_hmac
from app.services.ledger import TransactionView
from app.services.pagination import Slice, decode_cursor, read_limit, slice_of
from app.services.rules import RULES, RulesError, RuleSet, parse_rules
from app.services.scoring import window_counts
from app.settings import Settings
from app.store import fraud as fraud_store

# --- flags -------------------------------------------------------------------------

SCORE_KEY = 10**15  # list order: score, then id, packed into one cursor key


@dataclass(frozen=True, slots=True)
class FlagFilter:
    status: str | None = None
    rule: str | None = None
    customer_id: int | None = None
    assigned_to: int | None = None


def check_rule_code(code: str | None, field: str = "rule") -> None:
    if code is not None and code not in RULES:
        raise ValidationFailed(
            f"Unknown rule {code!r}; the rules are {', '.join(RULES)}.", field=field
        )


async def _numbers(db: AsyncSession, ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = await db.execute(select(Account.id, Account.number).where(Account.id.in_(ids)))
    return dict(rows.all())  # type: ignore[arg-type]


def flag_out(flag: Flag, numbers: dict[int, str]) -> dict[str, Any]:
    return {
        "flag_id": str(flag.id),
        "transaction_id": str(flag.journal_id),
        "transaction_ids": [str(i) for i in flag.transaction_ids],
        "customer_id": str(flag.customer_id) if flag.customer_id is not None else None,
        "account_number": numbers.get(flag.account_id) if flag.account_id else None,
        "score": flag.score,
        "rules_version": flag.rules_version,
        "rule_codes": list(flag.rule_codes),
        "reasons": list(flag.reasons),
        "status": flag.status,
        "decision": flag.decision,
        "note": flag.note,
        "assigned_to": str(flag.assigned_to) if flag.assigned_to is not None else None,
        "created_at": flag.created_at,
        "updated_at": flag.updated_at,
        "resolved_by": str(flag.resolved_by) if flag.resolved_by is not None else None,
        "resolved_at": flag.resolved_at,
    }


async def list_flags(
    db: AsyncSession, *, where: FlagFilter, cursor: str | None, limit: int
) -> Slice[dict[str, Any]]:
    """Flags, highest score first (then newest), a page at a time."""
    check_rule_code(where.rule)
    query = select(Flag).order_by(Flag.score.desc(), Flag.id.desc()).limit(read_limit(limit))
    if where.status is not None:
        query = query.where(Flag.status == where.status)
    if where.rule is not None:  # a known code (checked above), quoted as JSON stores it
        query = query.where(cast(Flag.rule_codes, String).like(f'%"{where.rule}"%'))
    if where.customer_id is not None:
        query = query.where(Flag.customer_id == where.customer_id)
    if where.assigned_to is not None:
        query = query.where(Flag.assigned_to == where.assigned_to)
    if (key := decode_cursor(cursor)) is not None:
        score, flag_id = divmod(key, SCORE_KEY)
        query = query.where(or_(Flag.score < score, (Flag.score == score) & (Flag.id < flag_id)))
    flags = list((await db.scalars(query)).all())
    numbers = await _numbers(db, {f.account_id for f in flags})
    views = [flag_out(flag, numbers) for flag in flags]
    return slice_of(views, limit, key=lambda view: view["score"] * SCORE_KEY + int(view["flag_id"]))


def _flag_id(flag_id: str) -> int:
    if not flag_id.isdigit() or len(flag_id) > 18:
        raise FlagNotFound(f"No flag {flag_id}.")
    return int(flag_id)


async def _flag(db: AsyncSession, flag_id: str, *, lock: bool = False) -> Flag:
    flag = await db.get(
        Flag, _flag_id(flag_id), with_for_update=lock or None, populate_existing=True
    )
    if flag is None:
        raise FlagNotFound(f"No flag {flag_id}.")
    return flag


async def _transaction_views(
    db: AsyncSession, journals: Sequence[Journal]
) -> list[TransactionView]:
    numbers = await _numbers(
        db, {j.from_account_id for j in journals} | {j.to_account_id for j in journals}
    )
    return [
        TransactionView.of(
            j,
            from_number=numbers.get(j.from_account_id) if j.from_account_id else None,
            to_number=numbers.get(j.to_account_id) if j.to_account_id else None,
            balance_after=None,
        )
        for j in journals
    ]


def _score_out(score: FraudScore) -> dict[str, Any]:
    return {
        "transaction_id": str(score.journal_id),
        "score": score.score,
        "rules_version": score.rules_version,
        "reasons": list(score.reasons),
        "features": dict(score.features),
        "scored_at": score.scored_at,
    }


async def _scores_on(db: AsyncSession, flag: Flag) -> Sequence[FraudScore]:
    """The score of every movement on the flag, oldest first."""
    query = (
        select(FraudScore)
        .where(FraudScore.journal_id.in_(flag.transaction_ids))
        .order_by(FraudScore.journal_id)
    )
    return (await db.scalars(query)).all()


async def flag_detail(db: AsyncSession, flag_id: str) -> dict[str, Any]:
    """The flag, its first transaction, every score on it, the customer's newest 20."""
    flag = await _flag(db, flag_id)
    journal = await db.get(Journal, flag.journal_id)
    assert journal is not None
    scores = await _scores_on(db, flag)
    recent = (
        await db.scalars(
            select(Journal)
            .where(Journal.customer_id == flag.customer_id)
            .order_by(Journal.id.desc())
            .limit(20)
        )
    ).all()
    numbers = await _numbers(db, {flag.account_id})
    (view,) = await _transaction_views(db, [journal])
    return {
        **flag_out(flag, numbers),
        "transaction": view,
        "scores": [_score_out(s) for s in scores],
        "recent_activity": await _transaction_views(db, recent),
    }


@retry_on_conflict
async def assign(db: AsyncSession, *, principal: Principal, flag_id: str) -> dict[str, Any]:
    """Assign an open flag to the calling admin (taking it over from whoever had it)."""
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="fraud.flag_assigned"):
        return await _assign(db, principal, flag_id)


async def _assign(db: AsyncSession, principal: Principal, flag_id: str) -> dict[str, Any]:
    async with unit_of_work(db) as tx:
        flag = await _flag(db, flag_id, lock=True)
        if flag.status != FlagStatus.open:
            raise AlreadyDecided(f"Flag {flag_id} is already resolved.")
        await conflicts.check_not_linked(db, principal.user_id, flag.customer_id, f"Flag {flag.id}")
        previous = flag.assigned_to
        flag.assigned_to = principal.user_id
        flag.updated_at = datetime.now(UTC)
        await db.flush()
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="fraud.flag_assigned",
            entity_type="flag",
            entity_id=flag.id,
            details={"from": str(previous) if previous is not None else None},
        )
    return flag_out(flag, await _numbers(db, {flag.account_id}))


@retry_on_conflict
async def resolve(
    db: AsyncSession, *, principal: Principal, flag_id: str, decision: str, note: str
) -> dict[str, Any]:
    """Resolve an open flag: `legitimate`, or `fraud`, which freezes the source account in
    the same transaction. Its rule keys close with it, so the next hit opens a new flag.
    An admin linked to the flag's customer is refused (audited)."""
    async with audit.denials_recorded(db, actor=Actor.of(principal), action="fraud.flag_resolved"):
        return await _resolve(db, principal, flag_id, decision, note)


async def _resolve(
    db: AsyncSession, principal: Principal, flag_id: str, decision: str, note: str
) -> dict[str, Any]:
    async with unit_of_work(db) as tx:
        flag = await _flag(db, flag_id, lock=True)
        if flag.status != FlagStatus.open:
            raise AlreadyDecided(f"Flag {flag_id} was already resolved ({flag.decision}).")
        await conflicts.check_not_linked(db, principal.user_id, flag.customer_id, f"Flag {flag.id}")
        now = datetime.now(UTC)
        flag.status = FlagStatus.resolved
        flag.decision = decision
        flag.note = note
        flag.resolved_by = principal.user_id
        flag.resolved_at = now
        flag.updated_at = now
        await db.flush()
        await db.execute(delete(FlagKey).where(FlagKey.flag_id == flag.id))
        frozen = None
        if decision == FlagDecision.fraud and flag.account_id is not None:
            account = await db.get(Account, flag.account_id, with_for_update={"key_share": True})
            if account is not None and account.status == AccountStatus.active:
                account.status = AccountStatus.frozen
                frozen = account.number
                await db.flush()
                await audit.record(
                    tx,
                    actor=Actor.of(principal),
                    action="account.status",
                    entity_type="account",
                    entity_id=account.number,
                    details={
                        "from": "active",
                        "to": "frozen",
                        "reason": f"Flag {flag.id} resolved as fraud",
                    },
                )
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="fraud.flag_resolved",
            entity_type="flag",
            entity_id=flag.id,
            details={"decision": decision, "note": note, "frozen_account": frozen},
        )
    return flag_out(flag, await _numbers(db, {flag.account_id}))


_rule_sets: dict[str, RuleSet] = {}


async def rule_set(db: AsyncSession, version: str) -> RuleSet:
    """A rule set that scored something, by version, parsed once per process."""
    if version not in _rule_sets:
        stored = await db.get(StoredRuleSet, version)
        if stored is None:
            raise ValidationFailed(f"Rule set {version} is not stored.", field="rules_version")
        _rule_sets[version] = parse_rules(stored.content, f"rule set {version}")
    return _rule_sets[version]


async def explain(db: AsyncSession, flag_id: str) -> dict[str, Any]:
    """Every score on the flag, re-run by its own rule set on its stored features."""
    flag = await _flag(db, flag_id)
    scores = await _scores_on(db, flag)
    out = []
    for score in scores:
        replayed = (await rule_set(db, score.rules_version)).score(dict(score.features))
        out.append(
            {
                "transaction_id": str(score.journal_id),
                "rules_version": score.rules_version,
                "features": dict(score.features),
                "stored_score": score.score,
                "stored_reasons": list(score.reasons),
                "replayed_score": replayed.score,
                "replayed_reasons": [r.as_dict() for r in replayed.reasons],
            }
        )
    identical = all(
        s["stored_score"] == s["replayed_score"] and s["stored_reasons"] == s["replayed_reasons"]
        for s in out
    )
    return {"flag_id": str(flag.id), "identical": identical, "scores": out}


# --- block and allow lists ---------------------------------------------------------


def entry_out(entry: ListEntry) -> dict[str, Any]:
    return {
        "entry_id": str(entry.id),
        "list": entry.list_kind,
        "target_type": entry.target_type,
        "target": entry.target,
        "reason": entry.reason,
        "rules": list(entry.rules),
        "expires_at": entry.expires_at,
        "created_by": str(entry.created_by) if entry.created_by is not None else None,
        "created_at": entry.created_at,
    }


async def _customers_of(db: AsyncSession, target_type: str, stored: str) -> set[int | None]:
    """The customers a list entry's target stands for."""
    if target_type == "account":
        return {await db.scalar(select(Account.customer_id).where(Account.number == stored))}
    if target_type == "customer":
        return {int(stored)}
    hits = await db.scalars(select(Customer.id).where(Customer.national_id_hmac == stored))
    return set(hits.all())


async def _target(db: AsyncSession, settings: Settings, target_type: str, target: str) -> str:
    """The stored form of a list entry's target; an unknown account or customer is 404."""
    if target_type == "account":
        number = accounts.parse_number(target, field="target")
        account = await db.scalar(select(Account).where(Account.number == number))
        if account is None or account.customer_id is None:
            raise AccountNotFound(f"No account {number}.", field="target")
        return number
    if target_type == "customer":
        if not target.isdigit() or len(target) > 18:
            raise ValidationFailed("A customer id is digits.", field="target")
        if await db.get(Customer, int(target)) is None:
            raise CustomerNotFound(f"No customer {target}.")
        return str(int(target))
    return national_id_hmac(settings, target)  # never kept in clear


@retry_on_conflict
async def add_entry(
    db: AsyncSession,
    settings: Settings,
    *,
    principal: Principal,
    list_kind: str,
    target_type: str,
    target: str,
    reason: str,
    rules: list[str],
    expires_at: datetime | None,
) -> dict[str, Any]:
    if list_kind == "allow" and not rules:
        raise ValidationFailed("An allow entry names the rules it suppresses.", field="rules")
    if list_kind == "block" and rules:
        raise ValidationFailed("A block entry blocks everything; it names no rules.", field="rules")
    for code in rules:
        check_rule_code(code, "rules")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValidationFailed("The expiry is in the past.", field="expires_at")
    stored = await _target(db, settings, target_type, target)
    action = f"fraud.{list_kind}_listed"
    async with audit.denials_recorded(db, actor=Actor.of(principal), action=action):
        await conflicts.check_not_linked(
            db, principal.user_id, await _customers_of(db, target_type, stored), "This target"
        )
    async with unit_of_work(db) as tx:
        entry = ListEntry(
            list_kind=list_kind,
            target_type=target_type,
            target=stored,
            reason=reason,
            rules=sorted(set(rules)),
            expires_at=expires_at,
            created_by=principal.user_id,
            created_at=datetime.now(UTC),
        )
        db.add(entry)
        await db.flush()
        if list_kind == "block":
            await blocks.refresh(db, await blocks.affected(db, target_type, stored))
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action=f"fraud.{list_kind}_listed",
            entity_type="list_entry",
            entity_id=entry.id,
            details={
                "target_type": target_type,
                "target": stored,
                "reason": reason,
                "rules": entry.rules,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return entry_out(entry)


async def list_entries(
    db: AsyncSession, *, list_kind: str | None, live_only: bool, cursor: str | None, limit: int
) -> Slice[dict[str, Any]]:
    query = select(ListEntry).order_by(ListEntry.id).limit(read_limit(limit))
    if list_kind is not None:
        query = query.where(ListEntry.list_kind == list_kind)
    if live_only:
        now = datetime.now(UTC)
        query = query.where(or_(ListEntry.expires_at.is_(None), ListEntry.expires_at > now))
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(ListEntry.id > after)
    rows = [entry_out(e) for e in (await db.scalars(query)).all()]
    return slice_of(rows, limit, key=lambda row: int(row["entry_id"]))


@retry_on_conflict
async def delete_entry(db: AsyncSession, *, principal: Principal, entry_id: str) -> None:
    if not entry_id.isdigit() or len(entry_id) > 18:
        raise ListEntryNotFound(f"No list entry {entry_id}.")
    async with audit.denials_recorded(
        db, actor=Actor.of(principal), action="fraud.list_entry_deleted"
    ):
        await _delete_entry(db, principal, entry_id)


async def _delete_entry(db: AsyncSession, principal: Principal, entry_id: str) -> None:
    async with unit_of_work(db) as tx:
        entry = await db.get(ListEntry, int(entry_id), with_for_update=True)
        if entry is None:
            raise ListEntryNotFound(f"No list entry {entry_id}.")
        await conflicts.check_not_linked(
            db,
            principal.user_id,
            await _customers_of(db, entry.target_type, entry.target),
            f"List entry {entry_id}",
        )
        details = {
            k: v for k, v in entry_out(entry).items() if k in ("list", "target_type", "target")
        }
        await db.delete(entry)
        await db.flush()
        if entry.list_kind == "block":
            await blocks.refresh(db, await blocks.affected(db, entry.target_type, entry.target))
        await audit.record(
            tx,
            actor=Actor.of(principal),
            action="fraud.list_entry_deleted",
            entity_type="list_entry",
            entity_id=entry_id,
            details=details,
        )


# --- backtest ----------------------------------------------------------------------

BACKTEST_MAX_MOVEMENTS = 200_000
BACKTEST_PAGE = 1000
SAMPLE = 100


def _ratio(num: int, den: int) -> str | None:
    return None if den == 0 else str((Decimal(num) / den).quantize(Decimal("0.0001")))


async def backtest(
    database: Database,
    *,
    actor: Actor,
    current: RuleSet,
    candidate_text: str,
    since: date,
    until: date,
) -> dict[str, Any]:
    """A backtest (see `_backtest`), audited: who ran which rule set over which period."""
    report = await _backtest(
        database, current=current, candidate_text=candidate_text, since=since, until=until
    )
    async with database.session() as db, unit_of_work(db) as tx:
        await audit.record(
            tx,
            actor=actor,
            action="fraud.backtest",
            entity_type="rule_set",
            entity_id=report["candidate_version"],
            details={
                "from": since.isoformat(),
                "to": until.isoformat(),
                "movements": report["movements"],
                "current_flagged": report["current_flagged"],
                "candidate_flagged": report["candidate_flagged"],
                "complete": report["complete"],
            },
        )
    return report


async def _backtest(
    database: Database,
    *,
    current: RuleSet,
    candidate_text: str,
    since: date,
    until: date,
) -> dict[str, Any]:
    """What `candidate_text` would have flagged over [since, until] (dates, inclusive)
    against the current rules, on the movements scored then, and against flags already
    resolved. Read-only, from one snapshot; stops at BANK_FRAUD_BACKTEST_SECONDS."""
    try:
        candidate = parse_rules(candidate_text, "rules")
    except RulesError as exc:
        raise ValidationFailed(str(exc), field="rules") from exc
    if until < since:
        raise ValidationFailed("`to` is before `from`.", field="to")
    settings = database.settings
    threshold = settings.fraud_flag_score
    deadline = time.monotonic() + settings.fraud_backtest_seconds
    start, end = day_start(since), day_start(until, next_day=True)
    notes: list[str] = []
    if candidate.windows.unusual_days != current.windows.unusual_days:
        notes.append(
            "unusual_amount.window_days differs from the current rules: the backtest uses"
            " the 30-day figures stored with each score"
        )
    current_flagged: set[int] = set()
    candidate_flagged: set[int] = set()
    movements = 0
    complete = True
    async with database.session() as db:
        await read_snapshot(db)
        tx = await session_tx(db)
        after = 0
        while True:
            page = (
                await db.execute(
                    select(FraudScore.journal_id, FraudScore.rules_version, FraudScore.features)
                    .join(Journal, Journal.id == FraudScore.journal_id)
                    .where(
                        Journal.created_at >= start,
                        Journal.created_at < end,
                        FraudScore.journal_id > after,
                    )
                    .order_by(FraudScore.journal_id)
                    .limit(BACKTEST_PAGE)
                )
            ).all()
            if not page:
                break
            # The movements themselves only when a window must be recounted.
            scored_by = {version: await rule_set(db, version) for _, version, _ in page}
            recount = any(
                rules.windows != by.windows
                for rules in (current, candidate)
                for by in scored_by.values()
            )
            ids = [row[0] for row in page] if recount else []
            found = {m.id: m for m in await fraud_store.movements(tx, ids)} if ids else {}
            for journal_id, version, stored in page:
                after = journal_id
                if movements >= BACKTEST_MAX_MOVEMENTS or time.monotonic() > deadline:
                    complete = False
                    break
                movements += 1
                for rules, flagged in ((current, current_flagged), (candidate, candidate_flagged)):
                    features = dict(stored)
                    if rules.windows != scored_by[version].windows and journal_id in found:
                        counts = await window_counts(tx, found[journal_id], rules.windows)
                        features["band_count"], features["transfers_in_window"] = counts
                    if rules.score(features).score >= threshold:
                        flagged.add(journal_id)
            if not complete:
                break
        resolved = (
            await db.execute(
                select(Flag.decision, Flag.transaction_ids)
                .join(Journal, Journal.id == Flag.journal_id)
                .where(
                    Flag.status == FlagStatus.resolved,
                    Journal.created_at >= start,
                    Journal.created_at < end,
                )
            )
        ).all()
    matrix = {"true_positive": 0, "false_negative": 0, "false_positive": 0, "true_negative": 0}
    for decision, ids in resolved:
        caught = any(i in candidate_flagged for i in ids)
        if decision == FlagDecision.fraud:
            matrix["true_positive" if caught else "false_negative"] += 1
        else:
            matrix["false_positive" if caught else "true_negative"] += 1
    tp, fp, fn = matrix["true_positive"], matrix["false_positive"], matrix["false_negative"]
    added = sorted(candidate_flagged - current_flagged)
    dropped = sorted(current_flagged - candidate_flagged)
    notes.append(
        "A movement counts as flagged when its score reaches BANK_FRAUD_FLAG_SCORE"
        f" ({threshold}); live, later hits of an open flag are added to it instead."
    )
    return {
        "current_version": current.version,
        "candidate_version": candidate.version,
        "movements": movements,
        "complete": complete,
        "current_flagged": len(current_flagged),
        "candidate_flagged": len(candidate_flagged),
        "added": len(added),
        "dropped": len(dropped),
        "added_transaction_ids": [str(i) for i in added[:SAMPLE]],
        "dropped_transaction_ids": [str(i) for i in dropped[:SAMPLE]],
        "confusion": {
            **matrix,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
        },
        "notes": notes,
    }
