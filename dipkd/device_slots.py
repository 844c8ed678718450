"""Worker slots of a parallel repro (:mod:`dipkd.parallel_repro`): which GPUs a stage uses.

``dipkd repro --jobs N`` runs the matrix through DVC's queue with N workers. A queued
stage cannot know which worker runs it, so each stage process takes a *slot* instead: the
lowest-numbered free one of N exclusive ``flock`` locks in a directory the driver names.
At most N stages run at once, so a free slot always exists; it is held until the process
exits (the kernel releases the lock also when it is killed). Slot ``i`` owns the GPUs
``gpus[i*g:(i+1)*g]`` of the driver's list (``g`` GPUs per run: ``compute.gpus``, at least
1), exported as ``CUDA_VISIBLE_DEVICES`` before CUDA is initialised, so every run sees its
own devices as ``cuda:0..g-1`` and two runs never share one. On a machine without GPUs a slot
holds no device and its tag says ``cpu``.

The assignment is a fixed rule (the lowest free slot), printed in the stage's log and
recorded in the run's MLflow tags ``gpu`` and ``worker_slot`` (:func:`tags`).

The driver passes (environment, inherited by the queue's workers and their stages):
``DIPKD_SLOTS`` (N), ``DIPKD_SLOT_DIR`` (where the locks live), ``DIPKD_SLOT_GPUS`` (the
comma-separated GPU ids to share out, empty without GPUs) and ``DIPKD_GPUS_PER_SLOT``.
Without ``DIPKD_SLOTS`` (an ordinary ``dvc repro``) nothing here does anything.
"""
from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

SLOTS_VAR = "DIPKD_SLOTS"
SLOT_DIR_VAR = "DIPKD_SLOT_DIR"
SLOT_GPUS_VAR = "DIPKD_SLOT_GPUS"
GPUS_PER_SLOT_VAR = "DIPKD_GPUS_PER_SLOT"


@dataclass(frozen=True)
class Slot:
    index: int
    slots: int
    gpus: tuple[str, ...]        # empty: a CPU worker

    @property
    def device(self) -> str:
        """What the ``gpu`` tag says: the GPU ids, or ``cpu``."""
        return ",".join(self.gpus) if self.gpus else "cpu"


_held: tuple[Slot, object] | None = None     # the slot and its open lock file


def slot_gpus(index: int, gpus: list[str], per_slot: int) -> tuple[str, ...]:
    """The GPUs of slot ``index``: the ``per_slot`` ids starting at ``index * per_slot``."""
    if per_slot <= 0 or not gpus:
        return ()
    chosen = gpus[index * per_slot:(index + 1) * per_slot]
    if len(chosen) < per_slot:
        raise ValueError(f"worker slot {index} needs GPUs {index * per_slot}.."
                         f"{(index + 1) * per_slot - 1} but only {len(gpus)} are listed "
                         f"({','.join(gpus)})")
    return tuple(chosen)


def acquire(env: dict | None = None, poll: float = 1.0) -> Slot | None:
    """Take the lowest free slot (waiting while all are taken) and export its GPUs; None
    outside a parallel repro. Idempotent within a process."""
    global _held
    env = os.environ if env is None else env
    if not env.get(SLOTS_VAR):
        return None
    if _held is not None:
        return _held[0]
    slots = int(env[SLOTS_VAR])
    directory = Path(env[SLOT_DIR_VAR])
    directory.mkdir(parents=True, exist_ok=True)
    gpus = [g for g in env.get(SLOT_GPUS_VAR, "").split(",") if g.strip()]
    per_slot = int(env.get(GPUS_PER_SLOT_VAR) or 0)
    waited = False
    while True:
        for index in range(slots):
            handle = open(directory / f"slot{index}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            slot = Slot(index, slots, slot_gpus(index, gpus, per_slot))
            if slot.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
            _held = (slot, handle)
            print(f"[dipkd] worker slot {index} of {slots}: "
                  f"{'GPU ' + slot.device if slot.gpus else 'CPU'}", flush=True)
            return slot
        if not waited:
            print(f"[dipkd] all {slots} worker slots taken; waiting for one", flush=True)
            waited = True
        time.sleep(poll)


def tags() -> dict[str, str]:
    """MLflow tags of the device a run trains on: ``gpu`` (the slot's GPU ids, or what
    ``CUDA_VISIBLE_DEVICES`` says, or ``cpu``/``all``), and ``worker_slot`` in a parallel
    repro."""
    if _held is not None:
        slot = _held[0]
        return {"gpu": slot.device, "worker_slot": f"{slot.index}/{slot.slots}"}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return {"gpu": visible or "cpu"}
    import torch
    return {"gpu": "all" if torch.cuda.is_available() else "cpu"}
