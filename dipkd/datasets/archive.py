"""Unpacking dataset archives into a temporary folder (zip, tar.*, and RAR via an external
tool). A failed unpack leaves nothing behind; callers move the result into place only when
their conversion is complete."""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

RAR_TOOLS = (("unrar", ["x", "-o+", "-idq"]), ("7z", ["x", "-y", "-bd"]), ("bsdtar", ["-xf"]))


class ArchiveError(ValueError):
    """The file is missing, not an archive, or cannot be unpacked here."""


def _is_rar(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(7) in (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01")


def unpack(archive, parent) -> Path:
    """Unpack ``archive`` into a new temporary folder under ``parent``; return the folder."""
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    Path(parent).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=".unpack-", dir=parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_members(archive, zf.namelist())
                zf.extractall(out)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(out, filter="data")
        elif _is_rar(archive):
            _unrar(archive, out)
        else:
            raise ArchiveError(f"{archive}: not an archive (zip, tar or rar expected)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise ArchiveError(f"{archive}: cannot unpack ({exc.__class__.__name__}: "
                           f"{str(exc)[:100]})") from None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _check_members(archive: Path, names) -> None:
    for name in names:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise ArchiveError(f"{archive}: unsafe member path {name!r}")


def _unrar(archive: Path, out: Path) -> None:
    for tool, args in RAR_TOOLS:
        if shutil.which(tool):
            cmd = [tool, *args, str(archive.resolve())]
            if tool == "unrar":
                cmd.append(str(out) + "/")
            elif tool == "7z":
                cmd.append(f"-o{out}")
            else:
                cmd += ["-C", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ArchiveError(f"{archive}: {tool} failed "
                                   f"({(proc.stderr or proc.stdout).strip()[:100]})")
            return
    raise ArchiveError(f"{archive}: RAR archive, and none of unrar, 7z, bsdtar is installed; "
                       "install one or unpack it yourself and set the dataset's path")
