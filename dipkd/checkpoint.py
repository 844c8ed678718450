"""Safe checkpoint loading under torch >= 2.6 (``weights_only=True`` by default).

mmengine 0.10.7 calls ``torch.load(filename, map_location)``: with torch 2.14's default
``weights_only=True`` that refuses mmengine's own resume checkpoints (they pickle
``HistoryBuffer`` objects and numpy arrays in the message hub), and the usual workaround,
``weights_only=False``, lets any pickled file run code. We keep ``weights_only=True`` and
allow exactly the extra classes mmengine/mmdet checkpoints contain; any other global in a
file is refused with :class:`UnsafeCheckpointError` before anything in it runs.

:func:`install` registers :func:`load_local_checkpoint` as mmengine's loader for local
paths, so ``load_from``, ``resume`` and ``load_checkpoint`` all go through it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file contains a pickled global outside the allowlist."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated, corrupt or not a torch checkpoint at all."""


def _numpy_globals() -> list:
    from numpy._core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in
                     ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                      "uint8", "uint16", "uint32", "uint64", "bool")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling: mmengine's ``HistoryBuffer``
    pickles its registered statistics methods as ``getattr(HistoryBuffer, 'mean')``. Only
    that is allowed; a general ``getattr`` would let a crafted file walk to other objects."""
    from mmengine.logging.history_buffer import HistoryBuffer
    # the built-in statistics are registered lazily (by the first HistoryBuffer created)
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"Unsupported global: getattr({type(obj).__name__}, {name!r}) is not allowed")


def allowlist() -> list:
    """Classes and functions a checkpoint written by mmengine/mmdet may reference."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, "builtins.getattr"), *_numpy_globals()]


def safe_load(path: str | os.PathLike, map_location="cpu", mmap: bool = False):
    """``torch.load`` with ``weights_only=True`` and :func:`allowlist`; one-line errors.
    ``mmap``: the tensors stay in the file, mapped, until read (what :func:`checkpoint_meta`
    uses: reading a checkpoint's meta then costs milliseconds instead of the whole file)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(allowlist()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n")
        refused = next((line.strip() for line in detail if "GLOBAL" in line or
                        "Unsupported" in line), detail[0])
        raise UnsafeCheckpointError(
            f"{path}: refused to load, the file references code outside the checkpoint "
            f"allowlist ({refused[:200]})") from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError) as exc:
        # a truncated or foreign file: torch's zip/pickle readers fail in these ways (a zip
        # cut short after its header: a bare "OSError: [Errno 22] Invalid argument")
        raise CorruptCheckpointError(f"{path}: not a readable torch checkpoint "
                           f"({str(exc).splitlines()[0][:200]})") from None


def checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's ``meta`` dict (run ids, epoch, config), without reading its
    tensors: the tables stage reads it from every model (50 in the default repro: 10-20 s
    of loading on a busy 2-core machine, 2 s mapped)."""
    return safe_load(path, mmap=True).get("meta", {})


def load_local_checkpoint(filename, map_location=None):
    """mmengine ``CheckpointLoader`` scheme for local files (replaces ``load_from_local``)."""
    return safe_load(filename, map_location=map_location)


def install() -> None:
    """Make every mmengine checkpoint load of a local path go through :func:`safe_load`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes="", force=True)(load_local_checkpoint)
