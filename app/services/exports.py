"""Files to download (statements, the audit log as CSV), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A cell starting like this is run as a formula by spreadsheets (CSV injection), and the
# exported text is partly client-chosen (path ids, usernames): such cells get a quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    content: bytes | str


def _cell(value: object) -> object:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_download(filename: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> Download:
    """Rows (JSON values) as CSV, one column each of `columns`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return Download(filename, "text/csv", buffer.getvalue())
