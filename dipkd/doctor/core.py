"""What every doctor check shares: the outcome of a check, the context the checks read, the
runner that times each check and turns an exception into a one-line FAIL, and the numeric
comparisons of a device's tensors with the CPU's."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class CheckFailed(Exception):
    """A check's expected failure: its message is the one-line detail of the FAIL."""


class CheckSkipped(Exception):
    """A check that does not apply here: its message is the one-line detail of the SKIP."""


@dataclass
class Result:
    """One line of the doctor's output and report."""
    name: str
    status: str
    detail: str
    seconds: float = 0.0


@dataclass
class Check:
    """A named check: ``run(ctx)`` returns its PASS detail or raises (:class:`CheckFailed`,
    :class:`CheckSkipped`, anything else = a FAIL naming the exception)."""
    name: str
    run: Callable[["Context"], str]
    needs_device: bool = True       # SKIP when the environment check found the device unusable


@dataclass
class Context:
    """What the checks read: the params (with the chosen profile), the device, the folder the
    ``data/<dataset>`` layouts are under, and what earlier checks found."""
    params: dict
    device: "object"                 # torch.device
    base: Path
    device_error: str | None = None  # set by the environment check when the device is unusable
    batch8: list = field(default_factory=list)   # (run name, fits, detail) per training step

    @property
    def profile(self) -> str:
        return self.params["profile"]

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception (no traceback)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run_check(check: Check, ctx: Context) -> Result:
    """Run one check, timed; its exception becomes a one-line FAIL (SKIP for
    :class:`CheckSkipped`, and for a device check when the device is unusable)."""
    start = time.perf_counter()
    if check.needs_device and ctx.device_error:
        return Result(check.name, SKIP, f"device {ctx.device} unusable (see environment)", 0.0)
    try:
        status, detail = PASS, check.run(ctx)
    except CheckSkipped as exc:
        status, detail = SKIP, str(exc)
    except CheckFailed as exc:
        status, detail = FAIL, str(exc)
    except Exception as exc:  # noqa: BLE001  (every failure is one line of the report)
        status, detail = FAIL, one_line(exc)
    finally:
        _release_device_memory(ctx)
    return Result(check.name, status, detail, time.perf_counter() - start)


def _release_device_memory(ctx: Context) -> None:
    """Give cached CUDA blocks back after a check, so the next one's peak is its own."""
    import gc
    gc.collect()
    if ctx.on_cuda and not ctx.device_error:
        import torch
        torch.cuda.empty_cache()


def run_all(checks: Iterable[Check], ctx: Context,
            on_result: Callable[[Result], None] = lambda r: None) -> list[Result]:
    """Run the checks in order, handing each result to ``on_result`` as it comes."""
    results = []
    for check in checks:
        result = run_check(check, ctx)
        on_result(result)
        results.append(result)
    return results


# ------------------------------------------------------------------ numeric comparisons

def rel_diff(actual, reference) -> float:
    """max |actual - reference| / max(max |reference|, tiny), on the CPU in float64: the
    error relative to the tensor's scale (0 for two empty or two all-zero tensors; inf when
    either holds a NaN or inf)."""
    import torch
    a = actual.detach().to("cpu", torch.float64)
    r = reference.detach().to("cpu", torch.float64)
    if a.shape != r.shape:
        raise CheckFailed(f"shape {tuple(a.shape)} vs {tuple(r.shape)} on the CPU")
    if a.numel() == 0:
        return 0.0
    if not (torch.isfinite(a).all() and torch.isfinite(r).all()):
        return float("inf")                 # a NaN or inf is never close to anything
    scale = max(r.abs().max().item(), 1e-30)
    return (a - r).abs().max().item() / scale


def worst(diffs: dict[str, float]) -> tuple[str, float]:
    """The name and value of the largest difference (``("-", 0.0)`` when there is none)."""
    if not diffs:
        return "-", 0.0
    name = max(diffs, key=diffs.get)
    return name, diffs[name]


def require_close(diffs: dict[str, float], tol: float, what: str) -> float:
    """The largest of ``diffs``; a :class:`CheckFailed` naming it when it exceeds ``tol``."""
    name, value = worst(diffs)
    if not value <= tol:       # NaN fails too
        raise CheckFailed(f"{what}: {name} differs by {value:.2e} relative (tolerance {tol:g})")
    return value
