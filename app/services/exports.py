"""Files to download (statements, the audit log as CSV), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio

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


def csv_text(columns: list[str], rows: Iterable[dict[str, Any]], *, header: bool = True) -> str:
    """Rows (JSON values) as CSV text, one column each of `columns` (a part of a streamed
    file leaves the header out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def csv_download(filename: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> Download:
    """Rows (JSON values) as CSV, one column each of `columns`."""
    return Download(filename, "text/csv", csv_text(columns, rows))


# A PDF's table is set in Courier, one text run per row: fixed-width columns padded with
# spaces line up without measuring strings, and a table of 10,000 rows takes a fraction
# of a second (fpdf2's cell() per value took seconds).
PDF_FONT_SIZE = 8  # pt: a Courier character is 0.6 em, 1.69 mm
PDF_ROW_HEIGHT = 5.5  # mm
PDF_MARGIN = 10.0  # mm, left, right and top; a row holds 111 characters, 188 mm
PDF_BOTTOM = 16.0  # mm kept free for the page footer


def latin1(text: str | None) -> str:
    """Core PDF fonts are Latin-1; anything else prints as '?'."""
    return (text or "").encode("latin-1", "replace").decode("latin-1")


def _render_table_pdf(
    title: str, pairs: list[tuple[str, str]], header: str, lines: list[str], heading: str
) -> bytes:
    # Imported here: fpdf2 takes most of a second to import, which every worker would pay
    # at start-up for a feature most requests never use.
    from fpdf import FPDF

    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(latin1(title))
    pdf.set_margins(PDF_MARGIN, PDF_MARGIN, PDF_MARGIN)
    pdf.set_auto_page_break(auto=False)

    def footer() -> None:
        pdf.set_y(-12)
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 6, f"Page {pdf.page_no()} of {{nb}}", align="C")

    pdf.footer = footer  # type: ignore[method-assign]
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, latin1(heading), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in pairs:
        pdf.cell(40, 6, label)
        pdf.cell(0, 6, latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    bottom = pdf.h - PDF_BOTTOM
    x = PDF_MARGIN

    def table_heading(top: float) -> float:
        pdf.set_font("Courier", "B", PDF_FONT_SIZE)
        pdf.text(x, top + 3, header)
        pdf.line(x, top + 4.2, pdf.w - PDF_MARGIN, top + 4.2)
        pdf.set_font("Courier", size=PDF_FONT_SIZE)
        return top + 4.2 + PDF_ROW_HEIGHT

    y = table_heading(pdf.get_y())
    for line in lines:
        if y > bottom:
            pdf.add_page()
            y = table_heading(PDF_MARGIN)
        pdf.text(x, y, line)
        y += PDF_ROW_HEIGHT
    return bytes(pdf.output())


async def table_pdf(
    title: str,
    pairs: list[tuple[str, str]],
    header: str,
    lines: list[str],
    *,
    heading: str | None = None,
) -> bytes:
    """A PDF: `heading` (default: the title) in bold, label-value `pairs`, then a fixed-width
    table (`header` and one text line per row, pages as needed), rendered in a thread."""
    return await anyio.to_thread.run_sync(
        _render_table_pdf, title, pairs, header, lines, heading or title
    )
