"""KYC documents: checked by content (the client's filename and content type are never
trusted: a PNG named `.pdf` is stored as the PNG it is), bounded in size, stored under the
data directory by a random name, and removed again if registration fails."""

from __future__ import annotations

import hashlib
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio

from app.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

CHUNK = 64 * 1024
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


@dataclass(frozen=True, slots=True)
class Upload:
    kind: str  # the form field: id_document | address_proof
    file: BinaryIO
    size: int | None


@dataclass(frozen=True, slots=True)
class StoredDocument:
    kind: str
    content_type: str
    size: int
    sha256: str
    storage_name: str


def sniff(head: bytes) -> str | None:
    for magic, content_type in SIGNATURES:
        if head.startswith(magic):
            return content_type
    return None


def _measure(upload: Upload) -> tuple[int, bytes, bool]:
    """Size, first bytes, and whether a ZIP archive is also in there: ZIP readers look
    for the archive's directory at the end of a file, so a PDF or an image with one
    appended (a polyglot) opens as both, and what a reviewer sees is not all it holds."""
    upload.file.seek(0, os.SEEK_END)
    size = upload.file.tell()
    upload.file.seek(0)
    head = upload.file.read(16)
    upload.file.seek(0)
    archive = size > 0 and zipfile.is_zipfile(upload.file)
    upload.file.seek(0)
    return size, head, archive


async def check_upload(upload: Upload, max_bytes: int) -> str:
    """Raise 413/415/422 for a file we will not keep; return its content type."""
    size, head, archive = await anyio.to_thread.run_sync(_measure, upload)
    if size == 0:
        raise ValidationFailed("The file is empty.", field=upload.kind)
    if size > max_bytes:
        raise PayloadTooLarge(f"{upload.kind} is larger than {max_bytes} bytes.", field=upload.kind)
    content_type = sniff(head)
    if content_type is None:
        raise UnsupportedMediaType(
            f"{upload.kind} must be a PDF, PNG or JPEG file.", field=upload.kind
        )
    if archive:
        raise UnsupportedMediaType(
            f"{upload.kind} also holds a ZIP archive; send the document alone.",
            field=upload.kind,
        )
    return content_type


def _write(upload: Upload, directory: Path, content_type: str) -> StoredDocument:
    directory.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(20)
    digest = hashlib.sha256()
    size = 0
    upload.file.seek(0)
    target = directory / name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := upload.file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return StoredDocument(upload.kind, content_type, size, digest.hexdigest(), name)


async def store(upload: Upload, directory: Path, content_type: str) -> StoredDocument:
    return await anyio.to_thread.run_sync(_write, upload, directory, content_type)


def remove(directory: Path, stored: list[StoredDocument]) -> None:
    for doc in stored:
        (directory / doc.storage_name).unlink(missing_ok=True)


def _digest_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def file_digest(directory: Path, storage_name: str) -> str | None:
    return await anyio.to_thread.run_sync(_digest_file, directory / storage_name)
