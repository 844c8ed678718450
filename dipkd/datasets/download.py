"""Fetching dataset archives: resumable HTTP download with progress and SHA-256 check.

A download goes to ``<dest>.partial``; an interrupted one resumes from there with an HTTP
``Range`` request (or starts over when the server ignores ranges). The file is renamed to
``dest`` only when complete and, when a SHA-256 is given, when it matches. The computed
hash is always printed so a user can pin it in params.yaml.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its checksum does not match."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> str:
    """Print and return the file's SHA-256; raise when ``expected`` is given and differs."""
    digest = sha256_of(path)
    print(f"[dipkd] sha256 {digest}  {path}", flush=True)
    if expected and digest.lower() != expected.lower():
        raise DownloadError(f"{path}: checksum mismatch (expected sha256 {expected}, "
                            f"got {digest})")
    return digest


RETRYABLE = (408, 429, 500, 502, 503, 504)


def download(url: str, dest, sha256: str | None = None, retries: int = 3,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming, verified, atomic); return ``dest``."""
    dest = Path(dest)
    if dest.is_file():
        verify_sha256(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(retries + 1):
        try:
            _fetch(url, partial, timeout)
            break
        except (OSError, http.client.HTTPException) as exc:
            fatal = isinstance(exc, urllib.error.HTTPError) and exc.code not in RETRYABLE
            if fatal or attempt == retries:
                kept = partial.stat().st_size if partial.exists() else 0
                raise DownloadError(f"{url}: download failed ({exc.__class__.__name__}: "
                                    f"{str(exc)[:120]}); {kept} bytes kept in {partial} "
                                    "to resume from") from None
    try:
        verify_sha256(partial, sha256)
    except DownloadError:
        partial.unlink()
        raise DownloadError(f"{url}: checksum mismatch (expected sha256 {sha256}); the "
                            "download was discarded") from None
    os.replace(partial, dest)
    return dest


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Fetch into ``partial``, continuing what it holds; raise if the body comes short."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file already holds everything
            return
        raise
    with response:
        resumed = bool(have) and response.status == 206
        length = response.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length else None
        with open(partial, "ab" if resumed else "wb") as fh, \
                tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                     desc=Path(url).name[:40]) as bar:
            while block := response.read(CHUNK):
                fh.write(block)
                bar.update(len(block))
    size = partial.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"connection cut at {size} of {total} bytes")
