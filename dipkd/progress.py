"""``ProgressBarHook``: a live bar on the console while mmengine's Runner trains (epoch,
iteration of the epoch, the last iteration's loss; ``tqdm``). :func:`dipkd.training.train` adds
it only when :func:`dipkd.console.progress_bar_wanted` (captured output on a terminal); it
changes nothing the run computes."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .console import progress_stream


class ProgressBarHook(Hook):
    priority = "VERY_LOW"

    def __init__(self):
        self._bar = None

    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=runner.max_iters, initial=runner.iter, file=progress_stream(),
                         leave=False, dynamic_ncols=True, unit="it")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._bar is None:
            return
        desc = (f"epoch {runner.epoch + 1}/{runner.max_epochs} "
                f"iter {batch_idx + 1}/{len(runner.train_dataloader)}")
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if loss is not None:
            desc += f" loss {float(loss):.3f}"
        self._bar.set_description_str(desc, refresh=False)
        self._bar.update(1)

    def after_train(self, runner) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def register() -> None:
    """Register :class:`ProgressBarHook` in mmengine's ``HOOKS`` (mmdet's finds it through its
    parent)."""
    if "ProgressBarHook" not in HOOKS.module_dict:
        HOOKS.register_module(module=ProgressBarHook)
