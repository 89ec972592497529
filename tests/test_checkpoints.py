"""Signed checkpoints and exports of the audit trail (issue 21; API.md §8): a copy of the
checkpoints kept elsewhere shows a tail cut, or rewritten, after any of them, which the
hash chain alone cannot; a signed export is checked offline."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.services import checkpoints as signed
from app.services.audit import verify_chain
from tests.helpers import Bank, execute, problem


def _env(settings: Any) -> dict[str, str]:
    return {
        "BANK_ENV": "test",
        "BANK_DATABASE_URL": settings.db_url,
        "BANK_DATA_DIR": str(settings.data_dir),
        "BANK_JWT_SECRET": settings.jwt_secret,
        "BANK_PII_SECRET": settings.pii_secret,
        "BANK_AUDIT_SIGNING_KEY": settings.audit_signing_key,
    }


async def _bank(settings: Any, *args: str, signing_key: str | None = None) -> Any:
    runner = CliRunner()
    env = _env(settings)
    if signing_key is not None:
        env["BANK_AUDIT_SIGNING_KEY"] = signing_key
    return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)


async def _kept(bank: Bank, auditor: dict[str, str], path: Path) -> list[dict[str, Any]]:
    """The auditor's copy of the checkpoints, kept away from the database."""
    response = await bank.client.get("/api/audit/checkpoints", headers=auditor)
    assert response.status_code == 200, response.text
    await asyncio.to_thread(path.write_text, response.text)
    return response.json()["items"]


async def _drop_append_only(database: Any) -> None:
    if database.is_sqlite:
        await execute(database, "DROP TRIGGER audit_log_no_delete")
        await execute(database, "DROP TRIGGER audit_log_no_update")
    else:
        await execute(database, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")


async def test_a_checkpoint_is_signed_by_the_published_key(bank, settings):
    await bank.customer()
    made = await _bank(settings, "audit", "checkpoint")
    assert made.exit_code == 0 and "signed checkpoint at seq" in made.output, made.output
    again = await _bank(settings, "audit", "checkpoint")
    assert "nothing to sign" in again.output  # the head has not moved
    auditor = await bank.staff("auditor")
    (checkpoint,) = (await bank.client.get("/api/audit/checkpoints", headers=auditor)).json()[
        "items"
    ]
    key = (await bank.client.get("/api/audit/checkpoints/key", headers=auditor)).json()
    assert key["key_id"] == checkpoint["key_id"]
    public = signed.load_public_key(key["public_key"])
    message = f"bank-audit-checkpoint:{checkpoint['seq']}:{checkpoint['hash']}:{checkpoint['at']}"
    assert signed.verify_signature(public, message.encode(), checkpoint["signature"])
    assert not signed.verify_signature(public, message.encode() + b"x", checkpoint["signature"])
    customer = (await bank.customer())[1]
    problem(await bank.client.get("/api/audit/checkpoints", headers=customer), 403, "forbidden")


@pytest.mark.settings(audit_checkpoint_records=5, audit_checkpoint_seconds=3600)
async def test_checkpoints_come_every_n_records(bank, app, database):
    signer = signed.Signer.of(app.state.settings)
    async with database.session() as db:
        assert await signed.make_checkpoint(db, signer) is None  # an empty log
    await bank.customer()  # several records
    async with database.session() as db:
        first = await signed.make_checkpoint(db, signer)  # the first is always due
        assert first is not None
        assert await signed.make_checkpoint(db, signer) is None  # head unchanged
    await bank.customer()
    await bank.customer()
    async with database.session() as db:
        second = await signed.make_checkpoint(db, signer)
    assert second is not None and second.seq - first.seq >= 5


async def test_a_tail_cut_after_a_checkpoint_is_caught_by_the_kept_copy(
    bank, database, settings, tmp_path
):
    await bank.customer()
    await _bank(settings, "audit", "checkpoint")
    auditor = await bank.staff("auditor")
    kept = await _kept(bank, auditor, tmp_path / "checkpoints.json")
    head = kept[-1]["seq"]
    intact = await _bank(settings, "verify", "--checkpoints", str(tmp_path / "checkpoints.json"))
    assert intact.exit_code == 0 and "all hold" in intact.output, intact.output
    await _drop_append_only(database)
    await execute(database, "DELETE FROM audit_log WHERE seq >= :s", s=head - 1)
    async with database.session() as db:
        assert (await verify_chain(db)).valid  # what is left is a valid chain on its own
    cut = await _bank(settings, "verify", "--checkpoints", str(tmp_path / "checkpoints.json"))
    assert cut.exit_code == 1
    assert f"checkpoint {head}: the record is gone" in cut.output


async def test_a_rewritten_tail_is_caught_by_the_kept_copy(bank, database, settings, tmp_path):
    await bank.customer()
    await _bank(settings, "audit", "checkpoint")
    auditor = await bank.staff("auditor")
    kept = await _kept(bank, auditor, tmp_path / "kept.json")
    await _drop_append_only(database)
    # A fork: the head record replaced by another whose hash is self-consistent.
    await execute(
        database, "UPDATE audit_log SET hash = :h WHERE seq = :s", h="f" * 64, s=kept[-1]["seq"]
    )
    forked = await _bank(settings, "verify", "--checkpoints", str(tmp_path / "kept.json"))
    assert forked.exit_code == 1
    assert "rewritten or forked" in forked.output
    forged = [{**kept[-1], "hash": "e" * 64}]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    bad = await _bank(settings, "verify", "--checkpoints", str(tmp_path / "forged.json"))
    assert "the signature does not hold" in bad.output


async def test_checkpoints_signed_before_a_key_rotation_still_verify(bank, settings, tmp_path):
    """The signing key is rotated (BANK_AUDIT_SIGNING_KEY changed): each checkpoint is
    checked with the key it names, every key that has signed is kept with its public half
    (GET /api/audit/checkpoints/keys), and a key the auditor did not give is named."""
    await bank.customer()
    assert (await _bank(settings, "audit", "checkpoint")).exit_code == 0
    rotated = "another-signing-secret-" + "x" * 32
    await bank.customer()
    made = await _bank(settings, "audit", "checkpoint", signing_key=rotated)
    assert made.exit_code == 0 and "signed checkpoint" in made.output, made.output
    auditor = await bank.staff("auditor")
    kept = await _kept(bank, auditor, tmp_path / "kept.json")
    old_key, new_key = kept[0]["key_id"], kept[-1]["key_id"]
    assert old_key != new_key
    keys = (await bank.client.get("/api/audit/checkpoints/keys", headers=auditor)).json()["items"]
    assert [k["key_id"] for k in keys] == [old_key, new_key]
    assert [k["current"] for k in keys] == [True, False]  # this app still signs with the first
    # Each key is first used at its first checkpoint's time, never after it.
    assert [k["first_used_at"] for k in keys] == [kept[0]["at"], kept[-1]["at"]]
    for k in keys:
        (tmp_path / f"{k['key_id']}.pem").write_text(k["public_key"])
    both = await _bank(
        settings, "verify", "--checkpoints", str(tmp_path / "kept.json"), signing_key=rotated
    )
    assert both.exit_code == 0 and f"checkpoints: {len(kept)} checked, all hold" in both.output, (
        both.output
    )
    only_new = await _bank(
        settings,
        "verify",
        "--checkpoints",
        str(tmp_path / "kept.json"),
        "--public-key",
        str(tmp_path / f"{new_key}.pem"),
    )
    assert only_new.exit_code == 1
    assert f"signed by key {old_key}, which is not among the keys given" in only_new.output
    pinned = await _bank(
        settings,
        "verify",
        "--checkpoints",
        str(tmp_path / "kept.json"),
        "--public-key",
        str(tmp_path / f"{old_key}.pem"),
        "--public-key",
        str(tmp_path / f"{new_key}.pem"),
    )
    assert pinned.exit_code == 0 and "all hold" in pinned.output, pinned.output


async def test_a_signed_export_is_checked_offline(bank, settings, tmp_path):
    await bank.customer()
    await bank.customer()
    auditor = await bank.staff("auditor")
    response = await bank.client.get("/api/audit/export", headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.content.splitlines()
    assert len(lines) > 5 and json.loads(lines[0])["seq"] == 1
    (tmp_path / "export.ndjson").write_bytes(response.content)
    key = (await bank.client.get("/api/audit/checkpoints/key", headers=auditor)).json()
    (tmp_path / "key.pem").write_text(key["public_key"])
    sig = response.headers["audit-signature"]
    assert response.headers["audit-key-id"] == key["key_id"]
    # The key that signs an export is kept with the checkpoints' keys.
    (kept,) = (await bank.client.get("/api/audit/checkpoints/keys", headers=auditor)).json()[
        "items"
    ]
    assert kept["key_id"] == key["key_id"] and kept["first_used_at"] is not None
    ok = await _bank(
        settings,
        "verify",
        "--export",
        str(tmp_path / "export.ndjson"),
        "--signature",
        sig,
        "--public-key",
        str(tmp_path / "key.pem"),
    )
    assert ok.exit_code == 0 and f"export: {len(lines)} records, valid" in ok.output, ok.output
    # From a pipe (`--export <(curl …)`): not mappable, read whole.
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as out:
            out.write(response.content)

    fed = asyncio.create_task(asyncio.to_thread(feed))
    piped = await _bank(
        settings,
        "verify",
        "--export",
        str(fifo),
        "--signature",
        sig,
        "--public-key",
        str(tmp_path / "key.pem"),
    )
    await fed
    assert piped.exit_code == 0 and "valid" in piped.output, piped.output
    altered = response.content.replace(b'"outcome":"success"', b'"outcome":"failed"', 1)
    (tmp_path / "altered.ndjson").write_bytes(altered)
    bad = await _bank(
        settings,
        "verify",
        "--export",
        str(tmp_path / "altered.ndjson"),
        "--signature",
        sig,
        "--public-key",
        str(tmp_path / "key.pem"),
    )
    assert bad.exit_code == 1 and "the signature does not hold" in bad.output
    # Signed, yet not a chain: the verifier also checks the order and each link.
    signer = signed.Signer.of(settings)
    public = signed.key_ring([signer.public_pem])
    swapped = lines[1] + b"\n" + lines[0] + b"\n"
    report = signed.verify_export(public, swapped, signer.sign(swapped))
    assert report.problems == ["record 1: out of order after record 2"]
    relinked = json.loads(lines[1]) | {"prev_hash": "0" * 64}
    forged = (
        lines[0]
        + b"\n"
        + json.dumps(relinked, sort_keys=True, separators=(",", ":")).encode()
        + b"\n"
    )
    problems = signed.verify_export(public, forged, signer.sign(forged)).problems
    assert "record 2: it does not follow record 1" in problems
    # A period cut by time may skip a seq (stamped at write, numbered at commit): not a break.
    gapped = lines[0] + b"\n" + lines[2] + b"\n"
    assert signed.verify_export(public, gapped, signer.sign(gapped)).valid
    period = await bank.client.get(
        "/api/audit/export", params={"from": "2999-01-01", "to": "2999-01-02"}, headers=auditor
    )
    assert period.status_code == 200 and period.content == b""
    assert period.headers["content-length"] == "0"
    assert signed.verify_export(public, b"", period.headers["audit-signature"]).valid


async def test_an_export_is_spooled_so_its_memory_is_a_batch_not_the_period(
    settings, database, tmp_path
):
    """A year of records is not held in memory to be signed: the export is written to a
    temporary file batch by batch and signed there; what Python holds at once is a batch
    and a piece of the file. (Built as one bytes object, 11 MB of export would peak above
    11 MB; spooled it stays under 3.)"""
    import tracemalloc

    signer = signed.Signer.of(settings)
    record = {"seq": 0, "action": "transaction.transfer", "details": {"note": "x" * 300}}

    async def batches():
        for b in range(30):
            yield [record | {"seq": b * 1000 + i} for i in range(1000)]

    received = tmp_path / "export.ndjson"
    pieces = 0
    tracemalloc.start()
    try:
        spooled = await signed.spool_export(database, batches(), signer)
        _, peak_spooling = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with received.open("wb") as out:
            async for piece in spooled.pieces():
                out.write(piece)
                pieces += 1
        _, peak_sending = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spooled.size == received.stat().st_size > 10_000_000
    assert pieces == -(-spooled.size // signed.EXPORT_CHUNK)
    assert peak_spooling < 3_000_000, peak_spooling
    assert peak_sending < 3_000_000, peak_sending
    assert spooled.file.closed
    assert received.read_bytes().count(b"\n") == 30_000
    with received.open("rb") as file, signed.mapped(file) as body:
        assert signed.verify_signature(signer.private.public_key(), body, spooled.signature)
