"""Multipart forms read strictly: every text part must be UTF-8 (Starlette falls back to
Latin-1 and would store the bytes as other characters), and a part the endpoint does not
declare is refused rather than ignored. Both answer 422 naming the part."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


@dataclass
class FormScan:
    names: list[str] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)


def scan_multipart(body: bytes, content_type: str) -> FormScan | None:
    """The part names of a multipart body, and which text parts are not UTF-8; None when
    the body is not multipart/form-data or has no boundary (the normal parser answers)."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return None
    scan, part = FormScan(), _Part()
    header_name, header_value = bytearray(), bytearray()

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        if bytes(header_name).lower() == b"content-disposition":
            _, disposition = parse_options_header(bytes(header_value))
            part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
            part.is_file = b"filename" in disposition
        header_name.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if not part.is_file:
            part.data.extend(data[start:end])

    def on_part_end() -> None:
        scan.names.append(part.name)
        if not part.is_file:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                scan.not_utf8.append(part.name)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception:
        return None
    return scan
