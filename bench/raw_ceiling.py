"""The storage's physical limit: the transfer transaction's shape (two balance updates,
two ledger entries, one transaction row, one idempotency row, one audit row) done with
the stdlib sqlite3 module, synchronous=FULL, no HTTP, no ORM, one connection."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE journals (id INTEGER PRIMARY KEY, amount INTEGER, created_at TEXT);
CREATE TABLE entries (id INTEGER PRIMARY KEY, journal_id INTEGER, account_id INTEGER,
                      amount INTEGER, balance_after INTEGER);
CREATE INDEX ix_entries_account ON entries (account_id, id);
CREATE TABLE idem (user_id INTEGER, key TEXT, body TEXT, PRIMARY KEY (user_id, key));
CREATE TABLE audit (seq INTEGER PRIMARY KEY, details TEXT, prev_hash TEXT, hash TEXT);
"""


def measure(directory: Path, seconds: float = 3.0, synchronous: str = "FULL") -> float:
    path = directory / f"raw-{synchronous.lower()}.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, 10**9) for i in range(1, 21)])
    prev = "0" * 64
    done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        a, b = done % 20 + 1, (done + 7) % 20 + 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO idem VALUES (?, ?, '')", (a, f"k{done}"))
        jid = conn.execute("INSERT INTO journals (amount, created_at) VALUES (1, 'now')").lastrowid
        bal_a = conn.execute(
            "UPDATE accounts SET balance = balance - 1 WHERE id = ? RETURNING balance", (a,)
        ).fetchone()[0]
        bal_b = conn.execute(
            "UPDATE accounts SET balance = balance + 1 WHERE id = ? RETURNING balance", (b,)
        ).fetchone()[0]
        conn.executemany(
            "INSERT INTO entries (journal_id, account_id, amount, balance_after) "
            "VALUES (?, ?, ?, ?)",
            [(jid, a, -1, bal_a), (jid, b, 1, bal_b)],
        )
        new = hashlib.sha256(f"{prev}{jid}".encode()).hexdigest()
        conn.execute(
            "INSERT INTO audit (details, prev_hash, hash) VALUES ('{}', ?, ?)", (prev, new)
        )
        conn.execute("UPDATE idem SET body = '{}' WHERE user_id = ? AND key = ?", (a, f"k{done}"))
        conn.execute("COMMIT")
        prev = new
        done += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return done / elapsed
