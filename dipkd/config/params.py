"""Load and validate ``params.yaml`` and resolve the settings of one run.

Every pipeline stage goes through :func:`run_spec` (or :func:`dataset_spec`), so an unknown
profile, dataset, detector or role fails at once with a one-line error that lists the valid
names, before anything is written.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DETECTORS = ("faster_rcnn", "retinanet")
ROLES = ("teacher", "student")
DISTILLED = "distilled"
SOURCES = ("synthetic", "ssdd", "hrsid")
REAL_SOURCE_KEYS = ("path", "archive", "url")
SCHEDULE_KEYS = ("epochs", "lr", "scale")
TRAIN_KEYS = ("batch_size", "workers", "pretrained", "warmup_iters", "log_interval",
              "val_interval", "momentum", "weight_decay")
MODEL_KEYS = ("rpn_nms_pre", "rpn_proposals", "rcnn_samples")


class ParamsError(ValueError):
    """params.yaml names something that does not exist or lacks a required entry."""


def project_root() -> Path:
    """The repository root: ``DVC_ROOT`` when DVC runs us (also for queued experiments that
    run in a temporary copy), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    validate(params)
    return params


def _choose(kind: str, name: Any, valid) -> None:
    valid = list(valid)
    if name not in valid:
        raise ParamsError(f"unknown {kind} {name!r}; valid: {', '.join(map(str, valid))}")


def _need(mapping: Any, keys, where: str) -> None:
    if not isinstance(mapping, dict):
        raise ParamsError(f"params.yaml: {where} must be a mapping")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ParamsError(f"params.yaml: {where} lacks {', '.join(missing)}")


def validate(params: dict) -> None:
    """Check the names params.yaml uses; raise :class:`ParamsError` on the first problem."""
    _need(params, ("profile", "seed", "datasets", "detectors", "data", "roles", "profiles"),
          "the top level")
    profiles = params["profiles"]
    _choose("profile", params["profile"], profiles)
    for name in params["datasets"]:
        _choose("dataset", name, params["data"])
    for name in params["detectors"]:
        _choose("detector", name, DETECTORS)
    for name, data in params["data"].items():
        _need(data, ("source",), f"data.{name}")
        _choose(f"data source for {name}", data["source"], SOURCES)
        if data["source"] != "synthetic" and not any(data.get(k) for k in REAL_SOURCE_KEYS):
            raise ParamsError(f"params.yaml: data.{name} (source {data['source']}) needs one of "
                              f"{', '.join(REAL_SOURCE_KEYS)}")
    for role in ROLES:
        _need(params["roles"], (role,), "roles")
        _need(params["roles"][role], ("depth",), f"roles.{role}")
        _choose(f"backbone depth for {role}", params["roles"][role]["depth"], (18, 34, 50, 101))
    methods = params.get("methods", {})
    for name in params.get("baselines", []):
        _choose("baseline method", name, [m for m in methods if m != "dipkd"])
    if "baseline_detector" in params:
        _choose("baseline_detector", params["baseline_detector"], params["detectors"])
    prof_name = params["profile"]
    prof = profiles[prof_name]
    where = f"profiles.{prof_name}"
    _need(prof, ("data", "train", "model", "schedule"), where)
    _need(prof["train"], TRAIN_KEYS, f"{where}.train")
    _need(prof["model"], MODEL_KEYS, f"{where}.model")
    for det in params["detectors"]:
        _need(prof["schedule"], (det,), f"{where}.schedule")
        for ds in params["datasets"]:
            _need(prof["schedule"][det], (ds,), f"{where}.schedule.{det}")
            _need(prof["schedule"][det][ds], SCHEDULE_KEYS, f"{where}.schedule.{det}.{ds}")
    for ds in params["datasets"]:
        _need(prof["data"], (ds,), f"{where}.data")


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset comes from and where its COCO layout lives."""

    name: str
    source: str
    preset: str | None
    overrides: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # real data: path/archive/url/sha256/variant

    @property
    def root(self) -> Path:
        return Path("data") / self.name


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (role x dataset x detector on a profile)."""

    role: str
    dataset: DatasetSpec
    detector: str
    profile: str
    seed: int
    depth: int
    schedule: dict
    train: dict
    model: dict
    experiment: str
    method: str = "none"
    method_params: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``<dataset>-<detector>``: the DVC matrix item name of the run."""
        return f"{self.dataset.name}-{self.detector}"

    @property
    def group(self) -> Path:
        """``teacher``, ``student`` or ``distilled/<method>``."""
        return Path(self.role) / self.method if self.role == DISTILLED else Path(self.role)

    @property
    def work_dir(self) -> Path:
        return Path("runs") / self.group / self.key

    @property
    def model_path(self) -> Path:
        return Path("models") / self.group / f"{self.key}.pth"

    @property
    def metrics_path(self) -> Path:
        return Path("metrics") / self.group / f"{self.key}.json"

    def tracked_params(self) -> dict:
        """The flat params worth showing in MLflow (the ones that change results)."""
        flat = {"role": self.role, "dataset": self.dataset.name, "detector": self.detector,
                "profile": self.profile, "seed": self.seed, "backbone_depth": self.depth,
                "data.source": self.dataset.source}
        if self.dataset.preset:
            flat["data.preset"] = self.dataset.preset
        if self.role == DISTILLED:
            flat["method"] = self.method
        for prefix, section in (("data", self.dataset.overrides), ("schedule", self.schedule),
                                ("train", self.train), ("model", self.model),
                                (self.method, self.method_params)):
            for k, v in section.items():
                flat[f"{prefix}.{k}"] = v
        return flat


def dataset_spec(params: dict, dataset: str) -> DatasetSpec:
    _choose("dataset", dataset, params["data"])
    data = params["data"][dataset]
    overrides = dict(params["profiles"][params["profile"]]["data"].get(dataset, {}))
    real = data["source"] != "synthetic"
    options = {k: v for k, v in data.items() if k not in ("source", "preset")}
    return DatasetSpec(name=dataset, source=data["source"],
                       preset=None if real else data.get("preset"),
                       overrides={} if real else overrides, options=options if real else {})


def distill_spec(params: dict, method: str, dataset: str, detector: str) -> RunSpec:
    """The student trained beside the frozen teacher with KD ``method`` (``methods.<name>``)."""
    _choose("KD method", method, params.get("methods", {}))
    student = run_spec(params, "student", dataset, detector)
    return dataclasses.replace(student, role=DISTILLED, method=method,
                               method_params=dict(params["methods"][method]))


def run_spec(params: dict, role: str, dataset: str, detector: str) -> RunSpec:
    _choose("role", role, ROLES)
    _choose("dataset", dataset, params["datasets"])
    _choose("detector", detector, params["detectors"])
    prof = params["profiles"][params["profile"]]
    return RunSpec(
        role=role,
        dataset=dataset_spec(params, dataset),
        detector=detector,
        profile=params["profile"],
        seed=int(params["seed"]),
        depth=int(params["roles"][role]["depth"]),
        schedule=dict(prof["schedule"][detector][dataset]),
        train=dict(prof["train"]),
        model=dict(prof["model"]),
        experiment=params.get("mlflow", {}).get("experiment", "dipkd-repro"),
    )
