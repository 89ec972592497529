"""The sanctions/PEP watch list used by the automatic KYC check. A plain text file (one
name per line, `#` comments), compared after normalisation: accents, case, punctuation
and word order do not matter."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path


def normalize_name(name: str) -> tuple[str, ...]:
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return tuple(sorted(re.findall(r"[^\W_]+", plain)))


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int) -> frozenset[tuple[str, ...]]:
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(normalize_name(line))
    return frozenset(entries)


def watchlist_hit(full_name: str, path: Path) -> bool:
    return normalize_name(full_name) in _load(path, path.stat().st_mtime_ns)
