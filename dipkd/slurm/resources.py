"""What each SLURM job of ``dipkd repro --executor slurm`` asks for: the ``slurm:`` block of
params.yaml, overridden per stage group (``slurm.stages.<group>``) and on the command line
(``--slurm KEY=VALUE``), turned into ``#SBATCH`` lines.

The block (every key optional; ``null`` leaves the choice to the cluster's defaults)::

    slurm:
      partition: null       # --partition
      account: null         # --account
      gres: gpu:1           # --gres (compute.gpus GPUs per run: gpu:N)
      cpus: 4               # --cpus-per-task (also the job's OMP_NUM_THREADS)
      mem: 32G              # --mem
      time: "24:00:00"      # --time
      extra: []             # further #SBATCH lines: ["--qos=high", "--constraint=a100"]
      stages:               # per stage group (the name before '@'): keys above
        prepare: {gres: null}

No stage of dvc.yaml depends on this block, so changing it retrains nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import yaml

from ..config.params import merged

SCALAR_KEYS = ("partition", "account", "gres", "cpus", "mem", "time")
KEYS = (*SCALAR_KEYS, "extra")
SBATCH_OPTION = {"partition": "--partition", "account": "--account", "gres": "--gres",
                 "cpus": "--cpus-per-task", "mem": "--mem", "time": "--time"}


class ResourceError(ValueError):
    """A ``slurm:`` setting that cannot be used (one line)."""


@dataclass(frozen=True)
class Resources:
    """The resources of one job; ``None`` = the cluster's default."""
    partition: str | None = None
    account: str | None = None
    gres: str | None = None
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None
    extra: tuple[str, ...] = ()

    def sbatch_lines(self) -> list[str]:
        """The ``#SBATCH`` lines that ask for these resources."""
        lines = [f"#SBATCH {SBATCH_OPTION[key]}={getattr(self, key)}"
                 for key in SCALAR_KEYS if getattr(self, key) is not None]
        return lines + [f"#SBATCH {line}" for line in self.extra]

    def gpus(self) -> int:
        """GPUs per job that ``gres`` asks for (``gpu:2``, ``gpu:a100:2``; 0 if none)."""
        if not self.gres:
            return 0
        total = 0
        for item in self.gres.split(","):
            parts = item.strip().split(":")
            if parts[0] == "gpu":
                total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return total


def _one_line(value: str, where: str) -> str:
    if "\n" in value or "\r" in value:
        raise ResourceError(f"slurm: {where} must be one line, got {value!r}")
    return value


def _value(key: str, value, where: str):
    """``value`` of ``key`` checked and typed (``where`` names it in errors)."""
    if value is None or (key != "extra" and value == ""):
        return () if key == "extra" else None
    if key == "cpus":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ResourceError(f"slurm: {where} must be a positive integer, got {value!r}")
        return value
    if key == "extra":
        lines = [value] if isinstance(value, str) else value
        if not isinstance(lines, list) or not all(isinstance(v, str) for v in lines):
            raise ResourceError(f"slurm: {where} must be a list of #SBATCH options, e.g. "
                                f"['--qos=high'], got {value!r}")
        return tuple(_one_line(v.strip().removeprefix("#SBATCH").strip(), where)
                     for v in lines if v.strip())
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ResourceError(f"slurm: {where} must be a string, got {value!r}")
    return _one_line(str(value), where)


def _apply(base: Resources, entries: Mapping, where: str) -> Resources:
    if not isinstance(entries, Mapping):
        raise ResourceError(f"slurm: {where} must be a mapping, got {entries!r}")
    unknown = sorted(set(entries) - set(KEYS))
    if unknown:
        raise ResourceError(f"slurm: {where} has unknown key(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(KEYS)}")
    return replace(base, **{k: _value(k, v, f"{where}.{k}".lstrip("."))
                            for k, v in entries.items()})


def parse_overrides(items: Iterable[str]) -> dict:
    """``--slurm KEY=VALUE`` options as a nested mapping like the ``slurm:`` block (VALUE
    read as YAML: ``null``, ``4``, ``[--qos=high]``; ``stages.prepare.gres=null`` sets a
    stage group's key)."""
    block: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path) or not (
                (len(path) == 1 and path[0] in KEYS)
                or (len(path) == 3 and path[0] == "stages" and path[2] in KEYS)):
            raise ResourceError(f"--slurm {item!r}: expected KEY=VALUE with KEY one of "
                                f"{', '.join(KEYS)} or stages.<group>.<key>")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = block
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return block


@dataclass(frozen=True)
class ResourcePlan:
    """The job resources of a repro: the block's defaults and its per-group entries."""
    default: Resources
    groups: Mapping[str, Resources]

    def for_stage(self, stage: str) -> Resources:
        """The resources of the job whose target is ``stage`` (``train_teacher@ssdd-...``)."""
        return self.groups.get(stage.split("@", 1)[0], self.default)


def resource_plan(params: Mapping, overrides: Mapping | None = None) -> ResourcePlan:
    """The ``slurm:`` block of ``params`` (absent: every key at the cluster's default) with
    the command line's ``overrides`` (:func:`parse_overrides`) on top; ``ResourceError`` on
    an unknown key or a bad value."""
    block = params.get("slurm") or {}
    if not isinstance(block, Mapping):
        raise ResourceError(f"slurm: must be a mapping, got {block!r}")
    block = merged(block, overrides or {})
    stages = block.get("stages") or {}
    if not isinstance(stages, Mapping):
        raise ResourceError(f"slurm: stages must map stage groups to settings, got {stages!r}")
    default = _apply(Resources(), {k: v for k, v in block.items() if k != "stages"}, "")
    groups = {name: _apply(default, entries or {}, f"stages.{name}")
              for name, entries in stages.items()}
    return ResourcePlan(default, groups)


def check_gpus(plan: ResourcePlan, processes: int) -> None:
    """With ``compute.gpus: N > 1`` (``processes``) each training runs N processes, one per
    GPU: a job that asks for GPUs at all must ask for N or more."""
    if processes <= 1:
        return
    for name, res in [("slurm", plan.default),
                      *((f"slurm.stages.{g}", r) for g, r in plan.groups.items())]:
        if 0 < res.gpus() < processes:
            raise ResourceError(f"{name}: gres {res.gres} gives {res.gpus()} GPU(s) per job "
                                f"but compute.gpus is {processes}; ask for gpu:{processes}")
