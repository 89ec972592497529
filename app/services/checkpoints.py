"""Signed checkpoints of the audit chain and signed exports (API.md §8).

The hash chain proves no record was changed or removed in its middle; it cannot prove
its last records were not cut off, or that the whole tail was not rewritten. So the
service signs the chain's head (seq, hash, time) with an Ed25519 key every
BANK_AUDIT_CHECKPOINT_RECORDS records or BANK_AUDIT_CHECKPOINT_SECONDS, whichever comes
first (and on demand, `bank audit checkpoint`). An auditor keeps a copy of the
checkpoints elsewhere; `bank verify --checkpoints FILE` then shows a chain cut, rewritten
or forked after any of them. An export of a period is signed over its exact bytes, and
`bank verify --export FILE --signature SIG` checks it offline.

The key is derived from BANK_AUDIT_SIGNING_KEY (SHA-256 of it is the Ed25519 seed); its
id is the first 16 hex digits of the public key's SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import mmap
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, end_reads, unit_of_work
from app.models import AuditCheckpoint, AuditRecord, AuditSigningKey
from app.schemas.common import iso_utc
from app.settings import Settings
from app.store.audit import CANONICAL

log = logging.getLogger(__name__)
LOOP_SECONDS = 5.0  # how often each process looks at the head


@dataclass(frozen=True, slots=True)
class Signer:
    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def of(cls, settings: Settings) -> Signer:
        if not settings.audit_signing_key:
            raise ValueError("BANK_AUDIT_SIGNING_KEY is not set (resolve_secrets sets it)")
        seed = hashlib.sha256(settings.audit_signing_key.encode()).digest()
        private = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(private, key_id(private.public_key()))

    def sign(self, message: bytes | mmap.mmap) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(seq: int, chain_hash: str, at: datetime) -> bytes:
    """What a checkpoint's signature covers: `bank-audit-checkpoint:<seq>:<hash>:<at>`, the
    time in ISO 8601 UTC with a Z."""
    return f"bank-audit-checkpoint:{seq}:{chain_hash}:{iso_utc(at)}".encode()


def verify_signature(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_public_key(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


async def make_checkpoint(
    db: AsyncSession, signer: Signer, *, force: bool = False
) -> AuditCheckpoint | None:
    """Sign the chain's head if it is due (or `force`d) and has moved since the last
    checkpoint. Several processes may try at once: the seq is the key, one wins."""
    settings = db.info["database"].settings
    head = (
        await db.execute(
            select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
        )
    ).first()
    last = (
        await db.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.at)
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        )
    ).first()
    await end_reads(db)
    if head is None or (last is not None and head.seq <= last.seq):
        return None
    now = datetime.now(UTC)
    due = (
        force
        or last is None
        or head.seq - last.seq >= settings.audit_checkpoint_records
        or (now - last.at).total_seconds() >= settings.audit_checkpoint_seconds
    )
    if not due:
        return None
    await register_key(db, signer, first_used_at=now)
    checkpoint = AuditCheckpoint(
        seq=head.seq,
        hash=head.hash,
        at=now,
        signature=signer.sign(checkpoint_message(head.seq, head.hash, now)),
        key_id=signer.key_id,
    )
    try:
        async with unit_of_work(db):
            db.add(checkpoint)
    except IntegrityError:
        return None  # another process signed this head first
    return checkpoint


async def register_key(db: AsyncSession, signer: Signer, *, first_used_at: datetime) -> None:
    """Keep the public half of the key about to sign its first checkpoint or export
    (stamped with that time), once: several processes may try."""
    if await db.get(AuditSigningKey, signer.key_id) is not None:
        await end_reads(db)
        return
    await end_reads(db)
    try:
        async with unit_of_work(db):
            db.add(
                AuditSigningKey(
                    key_id=signer.key_id,
                    public_key=signer.public_pem,
                    first_used_at=first_used_at,
                )
            )
    except IntegrityError:
        pass  # another process kept it first


async def known_keys(db: AsyncSession, signer: Signer | None) -> list[dict[str, Any]]:
    """Every key that has signed a checkpoint, oldest first, and the current one (which
    may not have signed yet), each marked `current` or not."""
    stored = (
        await db.scalars(select(AuditSigningKey).order_by(AuditSigningKey.first_used_at))
    ).all()
    keys = [
        {
            "key_id": k.key_id,
            "public_key": k.public_key,
            "first_used_at": iso_utc(k.first_used_at),
            "current": signer is not None and k.key_id == signer.key_id,
        }
        for k in stored
    ]
    if signer is not None and all(k["key_id"] != signer.key_id for k in keys):
        keys.append(
            {
                "key_id": signer.key_id,
                "public_key": signer.public_pem,
                "first_used_at": None,
                "current": True,
            }
        )
    return keys


def key_ring(pems: list[str]) -> dict[str, Ed25519PublicKey]:
    """Public keys by id."""
    ring = {}
    for pem in pems:
        public = load_public_key(pem)
        ring[key_id(public)] = public
    return ring


async def checkpoint_loop(database: Database) -> None:
    """Each process looks at the head every few seconds and signs it when due."""
    signer = Signer.of(database.settings)
    while True:
        try:
            async with database.session() as db:
                await make_checkpoint(db, signer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("audit checkpoint failed")
        await asyncio.sleep(LOOP_SECONDS)


async def list_checkpoints(
    db: AsyncSession, *, after_seq: int | None, limit: int
) -> list[AuditCheckpoint]:
    query = select(AuditCheckpoint).order_by(AuditCheckpoint.seq).limit(limit)
    if after_seq is not None:
        query = query.where(AuditCheckpoint.seq > after_seq)
    return list((await db.scalars(query)).all())


def checkpoint_dict(c: AuditCheckpoint) -> dict[str, Any]:
    return {
        "seq": c.seq,
        "hash": c.hash,
        "at": iso_utc(c.at),
        "signature": c.signature,
        "key_id": c.key_id,
    }


@dataclass(frozen=True, slots=True)
class CheckpointReport:
    valid: bool
    checkpoints_checked: int
    problems: list[str]


async def verify_against(
    db: AsyncSession, keys: dict[str, Ed25519PublicKey], kept: list[dict[str, Any]]
) -> CheckpointReport:
    """Check the chain against checkpoints kept elsewhere: each signature holds under the
    key it names (`keys`: public keys by id), and the record at each checkpoint's seq is
    still there with the same hash (a cut chain lacks it; a rewritten or forked one has
    another hash)."""
    problems = []
    for c in kept:
        seq, chain_hash, at = int(c["seq"]), str(c["hash"]), datetime.fromisoformat(c["at"])
        public = keys.get(str(c.get("key_id")))
        if public is None:
            problems.append(
                f"checkpoint {seq}: signed by key {c.get('key_id')}, which is not among the"
                " keys given"
            )
            continue
        if not verify_signature(public, checkpoint_message(seq, chain_hash, at), c["signature"]):
            problems.append(f"checkpoint {seq}: the signature does not hold")
            continue
        stored = await db.scalar(select(AuditRecord.hash).where(AuditRecord.seq == seq))
        if stored is None:
            head = await db.scalar(select(func.max(AuditRecord.seq)))
            problems.append(f"checkpoint {seq}: the record is gone (the chain ends at {head}): cut")
        elif stored != chain_hash:
            problems.append(f"checkpoint {seq}: the record's hash differs: rewritten or forked")
    return CheckpointReport(not problems, len(kept), problems)


# --- signed exports ------------------------------------------------------------------


EXPORT_CHUNK = 1 << 20  # bytes sent per piece of a spooled export


def export_lines(records: list[dict[str, Any]]) -> bytes:
    """One record per line, as JSON (keys sorted), each line ending in a newline."""
    return b"".join(orjson.dumps(r, option=CANONICAL) + b"\n" for r in records)


@contextmanager
def mapped(file: IO[bytes]) -> Iterator[bytes | mmap.mmap]:
    """A whole file as a read-only buffer, mapped rather than read into memory (and unmapped
    afterwards). An empty file cannot be mapped (its bytes are b""), nor a pipe (`bank
    verify --export <(curl …)`), which is read whole."""
    file.flush()
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode):
        yield file.read()
        return
    if info.st_size == 0:
        yield b""
        return
    view = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield view
    finally:
        view.close()


@dataclass(slots=True)
class SpooledExport:
    """An export written to an anonymous temporary file (gone when closed, or if the process
    dies) and signed there: its size in memory is a batch of records and a piece of the
    file, whatever the period."""

    file: IO[bytes]
    size: int
    signature: str

    async def pieces(self) -> AsyncIterator[bytes]:
        """The file, a piece at a time; closed when sent (or the download is dropped)."""
        try:
            self.file.seek(0)
            while piece := await asyncio.to_thread(self.file.read, EXPORT_CHUNK):
                yield piece
        finally:
            self.file.close()


async def spool_export(
    database: Database, batches: AsyncIterator[list[dict[str, Any]]], signer: Signer
) -> SpooledExport:
    """Write the records as JSON lines to a temporary file, batch by batch, then sign its
    exact bytes (Ed25519 reads the message twice: the file is mapped, not loaded), off the
    event loop. The signing key is kept with the checkpoints' keys."""
    async with database.session() as db:
        await register_key(db, signer, first_used_at=datetime.now(UTC))
    file = tempfile.TemporaryFile()  # noqa: SIM115 - SpooledExport.pieces closes it
    try:
        size = 0
        async for records in batches:
            size += await asyncio.to_thread(file.write, export_lines(records))
        signature = await asyncio.to_thread(_sign_file, signer, file)
    except BaseException:
        file.close()
        raise
    return SpooledExport(file, size, signature)


def _sign_file(signer: Signer, file: IO[bytes]) -> str:
    with mapped(file) as body:
        return signer.sign(body)


def _lines(body: bytes | mmap.mmap) -> Iterator[bytes]:
    start, end = 0, len(body)
    while start < end:
        stop = body.find(b"\n", start)
        stop = end if stop == -1 else stop
        if stop > start:
            yield body[start:stop]
        start = stop + 1


@dataclass(frozen=True, slots=True)
class ExportReport:
    valid: bool
    records: int
    problems: list[str]


def verify_export(
    keys: dict[str, Ed25519PublicKey], body: bytes | mmap.mmap, signature: str
) -> ExportReport:
    """An export checked offline: the signature over its exact bytes under one of `keys`
    (the export names its key in its `Audit-Key-Id` header, not in the file), then each
    record's hash recomputed and each link to the record before it within the export (a
    record at a time: `body` may be a mapped file)."""
    from app.store.audit import compute_hash

    if not any(verify_signature(public, body, signature) for public in keys.values()):
        return ExportReport(False, 0, ["the signature does not hold over these bytes"])
    problems: list[str] = []
    prev: dict[str, Any] | None = None
    count = 0
    for line in _lines(body):
        count += 1
        record = orjson.loads(line)
        fields = {
            k: record[k]
            for k in (
                "seq",
                "actor_id",
                "actor_role",
                "action",
                "entity_type",
                "entity_id",
                "outcome",
                "ip",
                "request_id",
                "details",
                "prev_hash",
            )
        }
        recomputed = compute_hash(at=datetime.fromisoformat(record["at"]), **fields)
        if recomputed != record["hash"]:
            problems.append(f"record {record['seq']}: its hash does not match its content")
        # A period cut by time may skip a seq whose record was stamped just outside it
        # (PostgreSQL stamps at write, numbers at commit): links are checked where the
        # seqs follow each other; the signature covers every byte in any case.
        if prev is not None and record["seq"] <= prev["seq"]:
            problems.append(f"record {record['seq']}: out of order after record {prev['seq']}")
        elif (
            prev is not None
            and record["seq"] == prev["seq"] + 1
            and record["prev_hash"] != prev["hash"]
        ):
            problems.append(f"record {record['seq']}: it does not follow record {prev['seq']}")
        prev = record
    return ExportReport(not problems, count, problems)
