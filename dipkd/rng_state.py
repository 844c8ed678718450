"""A resumed training continues with the random numbers the uninterrupted one would have drawn.

mmengine's resume restores the model, optimizer, schedulers and epoch, not the random number
generators: the resumed process starts from the seed, so from the first epoch after the
checkpoint on, the data augmentation, the RPN/RoI samplers and the KD losses' random masks
draw other numbers than an uninterrupted run, which then ends with other weights and metrics.
A requeued SLURM job (``dipkd repro --executor slurm``) or a killed ``dvc repro`` would not
give the result of the run it replaces.

:class:`RngStateHook` saves, when each training epoch starts, the state of every generator
the training draws from (Python's ``random``, NumPy's global one, torch's CPU and CUDA ones)
to ``rng_state.rank<r>.epoch<k>.pkl`` in the work dir (``k`` = epochs done; kept while a
checkpoint ``epoch_<k>.pth`` is there to resume into, and the two newest; none once the
training is done). A process that resumed at epoch ``k`` restores that file's states when its first
epoch starts, so it draws what the uninterrupted run drew from there on. Validation between
the checkpoint and the next epoch (it draws too: the data loader's seed) is thereby covered.
A resume without the file (a checkpoint older than the last epoch start, e.g. after a
truncated last checkpoint) says so in the log and goes on from the seed. Saving the states
draws nothing, so an uninterrupted run is unchanged by the hook.

Wiring: :func:`keep_rng_state` adds the hook to a runner config (after the config's
fingerprint is taken: it changes no result of an uninterrupted run).

:class:`ValidationRngHook` (``train.isolate_validation_rng: true``, off by default) keeps
validation out of the training's random numbers: a validation draws from torch's global
generator (each DataLoader iterator draws its base seed from it, torch's
``_BaseDataLoaderIter``), so without the hook a run validated every epoch trains on other
random numbers than the same run validated every 4 epochs, and ends with other weights. The
hook captures every generator when a validation starts and restores them when it ends, so the
validation interval changes only the validation curve. It changes the results of a run that
validates before its last epoch, so it is part of the config (and of its fingerprint).
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

HOOK_TYPE = "DipkdRngStateHook"
VALIDATION_HOOK_TYPE = "DipkdValidationRngHook"
KEEP = 2


def capture() -> dict:
    """The state of every generator a training draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict) -> None:
    """Set every generator to ``state`` (:func:`capture`)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_file(work_dir: os.PathLike, rank: int, epoch: int) -> Path:
    return Path(work_dir) / f"rng_state.rank{rank}.epoch{epoch}.pkl"


@HOOKS.register_module(name=HOOK_TYPE)
class RngStateHook(Hook):
    """Saves the generators' states when each epoch starts, restores them in a resumed run
    (module docstring)."""

    priority = "VERY_LOW"     # after every other before_train_epoch hook: nothing draws later

    def __init__(self):
        self._first = True

    def before_train_epoch(self, runner) -> None:
        from mmengine.dist import get_rank
        rank, epoch = get_rank(), runner.epoch
        path = state_file(runner.work_dir, rank, epoch)
        if self._first and epoch > 0:       # resumed at epoch `epoch`
            if path.is_file():
                restore(pickle.loads(path.read_bytes()))
                runner.logger.info(f"random generators restored to the start of epoch "
                                   f"{epoch + 1} ({path.name})")
            else:
                runner.logger.warning(f"no {path.name}: the resumed run draws other random "
                                      "numbers than an uninterrupted one would")
        self._first = False
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(capture()))
        os.replace(tmp, path)
        work_dir = Path(runner.work_dir)
        for old in work_dir.glob(f"rng_state.rank{rank}.epoch*.pkl"):
            done = old.stem.rsplit("epoch", 1)[-1]
            # keep the states a checkpoint can resume into (epoch_<k>.pth: k epochs done),
            # whatever the checkpoint interval, and the newest KEEP
            if done.isdigit() and int(done) <= epoch - KEEP and \
                    not (work_dir / f"epoch_{int(done)}.pth").is_file():
                old.unlink(missing_ok=True)

    def after_train(self, runner) -> None:
        """Training done: no epoch is left to resume into."""
        from mmengine.dist import get_rank
        for path in Path(runner.work_dir).glob(f"rng_state.rank{get_rank()}.epoch*.pkl"):
            path.unlink(missing_ok=True)


@HOOKS.register_module(name=VALIDATION_HOOK_TYPE)
class ValidationRngHook(Hook):
    """Restores, when a validation ends, the generators' states it found when it started
    (module docstring)."""

    def __init__(self):
        self._state = None

    def before_val_epoch(self, runner) -> None:
        self._state = capture()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._state is not None:
            restore(self._state)
            self._state = None


def keep_rng_state(cfg) -> None:
    """Add :class:`RngStateHook` to an mmengine runner config."""
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type=HOOK_TYPE)]
