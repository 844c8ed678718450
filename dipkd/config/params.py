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

from ..datasets.sources import REAL_SOURCES, SOURCES, SYNTHETIC  # plain data
from ..models.detectors import DETECTORS  # plain data (names, builders): no upward import

ROLES = ("teacher", "student")
DISTILLED = "distilled"
REAL_SOURCE_KEYS = ("path", "archive", "url")
# What a schedule entry's optional ``teacher`` mapping may override for the teacher's run.
TEACHER_SCHEDULE_KEYS = ("epochs", "lr", "milestones")
DIPKD_MODULES = ("sns", "kld", "rit")
# DIPKD hyperparameters that the sensitivity tables (4, 5) vary.
SENSITIVITY_KEYS = {"tau": "table4", "mask_rate": "table5"}


class ParamsError(ValueError):
    """params.yaml names something that does not exist or lacks a required entry."""


# ---------------------------------------------------------------- typed profile sections
# A profile's train/model/schedule sections are parsed once, at the boundary (run_spec,
# validate), into these frozen dataclasses: builders read typed attributes, never
# ``int(tr["batch_size"])``. Their fields are the sections' keys (one place).

@dataclass(frozen=True)
class TrainSettings:
    """``profiles.<p>.train``: shared by every training run of the profile."""
    batch_size: int
    workers: int
    pretrained: bool               # ImageNet backbone weights (need a download)
    warmup_iters: int
    log_interval: int
    val_interval: int
    momentum: float
    weight_decay: float
    clip_grad: float | None = None   # max gradient L2 norm; None: no clipping
    checkpoint_interval: int = 1     # an epoch checkpoint (to resume from) every n epochs;
    #                                  the last epoch's is always written (the export reads it)
    kd_probe: bool = True            # distillations probe each loss term's gradient on the
    #                                  student's features (dipkd.kd_terms, MLflow kd_grad/*)
    kd_probe_interval: int | None = None   # iterations between two KD-gradient probes of a
    #                                  distillation (dipkd.kd_terms); None: log_interval
    isolate_validation_rng: bool = False   # a validation leaves the random generators as it
    #                                  found them, so val_interval changes no trained weight
    #                                  (dipkd.rng_state.ValidationRngHook); off: as before
    cpu_bf16: bool = False           # CPU training steps compute convolutions and linear
    #                                  layers in bfloat16 (dipkd.models.cpu_bf16): faster on
    #                                  AVX512-BF16 CPUs, other weights; off: float32


@dataclass(frozen=True)
class ModelSettings:
    """``profiles.<p>.model``: Faster R-CNN's proposal counts."""
    rpn_nms_pre: int
    rpn_proposals: int
    rcnn_samples: int
    rpn_test_nms_pre: int | None = None   # test_cfg.rpn.nms_pre; None: rpn_nms_pre

    @property
    def test_nms_pre(self) -> int:
        """The RPN's top-k before NMS at test time."""
        return self.rpn_nms_pre if self.rpn_test_nms_pre is None else self.rpn_test_nms_pre


@dataclass(frozen=True)
class Schedule:
    """One run's schedule: ``profiles.<p>.schedule.<detector>.<dataset>`` (for the teacher
    updated by its optional ``teacher`` mapping, :func:`role_schedule`)."""
    epochs: int
    lr: float
    scale: tuple[int, int]                 # resize scale (w, h)
    milestones: tuple[int, ...] | None = None   # lr x0.1 at these epochs; None: mmdet 1x shape


def _typed_value(kind, value, where: str):
    """``value`` as the annotated ``kind`` (int, float, bool, an optional, a tuple of ints),
    or a one-line :class:`ParamsError`."""
    if kind in ("int | None", "float | None", "tuple[int, ...] | None"):
        return None if value is None else _typed_value(kind.split(" | ")[0], value, where)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ParamsError(f"params.yaml: {where} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamsError(f"params.yaml: {where} must be an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParamsError(f"params.yaml: {where} must be a number, got {value!r}")
    if kind.startswith("tuple[int"):
        items = value if isinstance(value, (list, tuple)) else None
        if (items is None or (kind == "tuple[int, int]" and len(items) != 2)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in items)):
            shape = "[w, h] integers" if kind == "tuple[int, int]" else "a list of integers"
            raise ParamsError(f"params.yaml: {where} must be {shape}, got {value!r}")
        return tuple(items)
    raise TypeError(f"no parser for {kind}")


def parse_section(cls, section, where: str, extra: tuple[str, ...] = ()):
    """A params.yaml mapping as the frozen dataclass ``cls``: every field without a default
    present, no unknown key (``extra`` keys are allowed and ignored), each value typed."""
    if not isinstance(section, dict):
        raise ParamsError(f"params.yaml: {where} must be a mapping, got {section!r}")
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    _need(section, required, where)
    known = {f.name for f in fields} | set(extra)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ParamsError(f"params.yaml: {where} has unknown key(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(f.name for f in fields)}")
    return cls(**{f.name: _typed_value(f.type, section[f.name], f"{where}.{f.name}")
                  for f in fields if f.name in section})


def parse_schedule(entry, where: str) -> Schedule:
    """A schedule entry (its optional ``teacher`` mapping allowed) as a typed
    :class:`Schedule` with epochs >= 1, lr > 0 and a positive scale."""
    sched = parse_section(Schedule, entry, where, extra=("teacher",))
    if min(sched.scale) <= 0 or sched.epochs < 1 or sched.lr <= 0:
        raise ParamsError(f"params.yaml: {where} needs epochs >= 1, lr > 0 and a positive "
                          f"scale, got {entry!r}")
    return sched


def requested_processes(params: dict) -> int:
    """Training processes per stage from ``compute.gpus`` (absent, 0 or 1: one process)."""
    compute = params.get("compute") or {}
    if not isinstance(compute, dict):
        raise ParamsError("params.yaml: compute must be a mapping")
    gpus = compute.get("gpus", 0)
    if gpus is None:
        gpus = 0
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ParamsError(f"params.yaml: compute.gpus must be a non-negative integer, "
                          f"got {gpus!r}")
    return max(gpus, 1)


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


def _check_milestones(entry: dict, where: str) -> None:
    """The optional ``milestones`` of a schedule entry (epochs at which the lr drops x0.1;
    absent: the 8/12, 11/12 rule of ``mmdet_config._milestones``) must be a non-empty list
    of strictly increasing positive ints, none past ``epochs``."""
    if "milestones" not in entry:
        return
    ms, epochs = entry["milestones"], entry["epochs"]
    ok = (isinstance(ms, list) and ms
          and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in ms)
          and all(a < b for a, b in zip(ms, ms[1:]))
          and isinstance(epochs, (int, float)) and ms[-1] <= epochs)
    if not ok:
        raise ParamsError(f"params.yaml: {where}.milestones must be a list of increasing "
                          f"positive epochs <= epochs ({epochs}), got {ms!r}")


def role_schedule(entry: dict, role: str) -> dict:
    """The schedule of a run of ``role`` from a params.yaml schedule entry: the entry itself,
    and for the teacher the entry updated by its optional ``teacher`` mapping (epochs, lr,
    milestones). KD trains a student from a converged teacher; a CPU-sized profile gives
    the teacher a longer schedule than the students so that it converges. The paper profile
    has no ``teacher`` mapping: every run of a detector and dataset has the same schedule."""
    sched = {k: v for k, v in entry.items() if k != "teacher"}
    if role == "teacher":
        teacher = entry.get("teacher") or {}
        if "epochs" in teacher and "milestones" not in teacher:
            sched.pop("milestones", None)    # the student's steps do not fit other epochs
        sched.update(teacher)
    return sched


def _check_schedule(entry: dict, where: str) -> None:
    """A schedule entry's optional ``milestones`` and ``teacher`` override, for both the
    student's and the teacher's resolved schedule."""
    _check_milestones(entry, where)
    if "teacher" not in entry:
        return
    teacher = entry["teacher"]
    if not isinstance(teacher, dict) or not set(teacher) <= set(TEACHER_SCHEDULE_KEYS):
        raise ParamsError(f"params.yaml: {where}.teacher must be a mapping of "
                          f"{', '.join(TEACHER_SCHEDULE_KEYS)}, got {teacher!r}")
    epochs = teacher.get("epochs", entry["epochs"])
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ParamsError(f"params.yaml: {where}.teacher.epochs must be a positive int, "
                          f"got {epochs!r}")
    _check_milestones(role_schedule(entry, "teacher"), f"{where}.teacher")


def validate(params: dict) -> None:
    """Check the names params.yaml uses; raise :class:`ParamsError` on the first problem."""
    _need(params, ("profile", "seeds", "datasets", "detectors", "data", "roles", "profiles"),
          "the top level")
    seeds = params["seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                       for s in seeds)):
        raise ParamsError(f"params.yaml: seeds must be a non-empty list of distinct "
                          f"non-negative integers, got {seeds!r}")
    ts = params.get("teacher_seed", 0)
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise ParamsError(f"params.yaml: teacher_seed must be a non-negative integer, got {ts!r}")
    profiles = params["profiles"]
    _choose("profile", params["profile"], profiles)
    for name in params["datasets"]:
        _choose("dataset", name, params["data"])
    for name in params["detectors"]:
        _choose("detector", name, DETECTORS)
    for name, data in params["data"].items():
        _need(data, ("source",), f"data.{name}")
        _choose(f"data source for {name}", data["source"], SOURCES)
        if data["source"] != SYNTHETIC and not any(data.get(k) for k in REAL_SOURCE_KEYS):
            raise ParamsError(f"params.yaml: data.{name} (source {data['source']}) needs one of "
                              f"{', '.join(REAL_SOURCE_KEYS)}")
    for role in ROLES:
        _need(params["roles"], (role,), "roles")
        _need(params["roles"][role], ("depth",), f"roles.{role}")
        _choose(f"backbone depth for {role}", params["roles"][role]["depth"], (18, 34, 50, 101))
    methods = params.get("methods", {})
    for name, entry in methods.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("type", ""), str):
            raise ParamsError(f"params.yaml: methods.{name}.type must name its registered KD "
                              "loss class (e.g. FGDLoss; dipkd/kd/methods.py)")
    for name in params.get("baselines", []):
        _choose("baseline method", name, [m for m in methods if m != "dipkd"])
    if "baseline_detector" in params:
        _choose("baseline_detector", params["baseline_detector"], params["detectors"])
    _validate_ablation(params)
    _validate_compare(params.get("compare"))
    requested_processes(params)   # checks compute.gpus
    prof_name = params["profile"]
    prof = profiles[prof_name]
    where = f"profiles.{prof_name}"
    _need(prof, ("data", "train", "model", "schedule"), where)
    clip = prof["train"].get("clip_grad") if isinstance(prof["train"], dict) else None
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or clip <= 0):
        raise ParamsError(f"params.yaml: {where}.train.clip_grad must be a positive number "
                          f"(max gradient L2 norm) or null, got {clip!r}")
    train = parse_section(TrainSettings, prof["train"], f"{where}.train")
    for key, unit in (("checkpoint_interval", "epochs"), ("val_interval", "epochs"),
                      ("kd_probe_interval", "iterations"), ("log_interval", "iterations")):
        value = getattr(train, key)
        if value is not None and value < 1:
            raise ParamsError(f"params.yaml: {where}.train.{key} must be a positive number "
                              f"of {unit}, got {value!r}")
    parse_section(ModelSettings, prof["model"], f"{where}.model")
    for det in params["detectors"]:
        _need(prof["schedule"], (det,), f"{where}.schedule")
        for ds in params["datasets"]:
            _need(prof["schedule"][det], (ds,), f"{where}.schedule.{det}")
            entry, at = prof["schedule"][det][ds], f"{where}.schedule.{det}.{ds}"
            _need(entry, ("epochs",), at)
            _check_schedule(entry, at)        # the milestones' own message first
            parse_schedule(entry, at)
    for ds in params["datasets"]:
        _need(prof["data"], (ds,), f"{where}.data")


def parse_modules(modules: str) -> dict:
    """A Table-3 row name (``sns``, ``kld_rit``, ... modules joined by ``_`` in the order
    sns, kld, rit; ``none`` for no module) -> ``{"sns": bool, "kld": bool, "rit": bool}``."""
    parts = [] if modules == "none" else str(modules).split("_")
    if any(p not in DIPKD_MODULES for p in parts) or len(set(parts)) != len(parts) or \
            parts != [m for m in DIPKD_MODULES if m in parts]:
        raise ParamsError(f"ablation.modules entry {modules!r}: expected 'none' or modules of "
                          f"{', '.join(DIPKD_MODULES)} joined by '_' in that order (e.g. sns_rit)")
    return {m: m in parts for m in DIPKD_MODULES}


def modules_name(on: dict) -> str:
    """Inverse of :func:`parse_modules`."""
    return "_".join(m for m in DIPKD_MODULES if on.get(m)) or "none"


def _validate_ablation(params: dict) -> None:
    """``ablation`` (Table 3) and ``sensitivity`` (Tables 4, 5) run DIPKD variants on one
    dataset and detector of the pipeline. The runs those tables share with Table 1 are not
    listed: Table 3's "none" row is the student, its all-modules row and the default tau /
    mask rate rows are the DIPKD run itself, so listing them would train them twice."""
    ab = params.get("ablation")
    if ab is None:
        raise ParamsError("params.yaml: the top level lacks ablation")
    _need(ab, ("dataset", "detector", "modules", "tau", "mask_rate"), "ablation")
    _choose("ablation dataset", ab["dataset"], params["datasets"])
    _choose("ablation detector", ab["detector"], params["detectors"])
    dipkd = params.get("methods", {}).get("dipkd")
    if dipkd is None:
        raise ParamsError("params.yaml: ablation needs methods.dipkd")
    default = modules_name({m: dipkd.get(m, True) for m in DIPKD_MODULES})
    for modules in ab["modules"]:
        parse_modules(modules)
        if modules in ("none", default):
            raise ParamsError(f"params.yaml: ablation.modules lists {modules!r}, which is "
                              f"{'the student' if modules == 'none' else 'the DIPKD run'}; "
                              "its row is taken from that run, remove it from the list")
    if len(set(ab["modules"])) != len(ab["modules"]):
        raise ParamsError("params.yaml: ablation.modules has duplicates")
    for key in SENSITIVITY_KEYS:
        values = ab[key]
        if not isinstance(values, list) or len(set(values)) != len(values):
            raise ParamsError(f"params.yaml: ablation.{key} must be a list without duplicates")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParamsError(f"params.yaml: ablation.{key} value {v!r} is not a number")
            if key == "mask_rate" and not 0 <= v <= 1:
                raise ParamsError(f"params.yaml: ablation.mask_rate value {v} not in [0, 1]")
            if key == "tau" and v <= 0:
                raise ParamsError(f"params.yaml: ablation.tau value {v} must be positive")
            if float(v) == float(dipkd[key]):
                raise ParamsError(f"params.yaml: ablation.{key} lists {v}, the DIPKD default "
                                  f"(methods.dipkd.{key}); its row is the DIPKD run itself, "
                                  "remove it from the list")


def _validate_compare(pairs) -> None:
    """``compare``: a list of pairs ``[a, b]`` of two different run-group names (whether each
    names runs of this matrix is checked where the groups are known: dipkd/reports/pairs.py)."""
    if pairs is None:
        return
    if not isinstance(pairs, list):
        raise ParamsError(f"params.yaml: compare must be a list of pairs [a, b], got {pairs!r}")
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(n, str) and n for n in pair) or pair[0] == pair[1]):
            raise ParamsError(f"params.yaml: compare entry {pair!r} is not a pair [a, b] of two "
                              "different run names (e.g. [dipkd, inherit_only])")
    if len({tuple(p) for p in pairs}) != len(pairs):
        raise ParamsError("params.yaml: compare has duplicate pairs")


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
        """The common COCO layout; its ``summary.json`` is the whole summary (numbers, source,
        warnings, generator config), the sidecar of :attr:`metrics_path`."""
        return Path("data") / self.name

    @property
    def metrics_path(self) -> Path:
        """The numeric part of the summary (``dvc metrics show``): images, ships, sizes..."""
        return Path("metrics") / "data" / f"{self.name}.json"


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (role x dataset x detector on a profile)."""

    role: str
    dataset: DatasetSpec
    detector: str
    profile: str
    seed: int
    depth: int
    schedule: Schedule
    train: TrainSettings
    model: ModelSettings
    experiment: str
    method: str = "none"
    method_params: dict = field(default_factory=dict)
    variant: str = ""  # a DIPKD ablation / sensitivity run: "sns_rit", "tau0.75", ...

    @property
    def key(self) -> str:
        """``<dataset>-<detector>``: the DVC matrix item name of the run."""
        return f"{self.dataset.name}-{self.detector}"

    @property
    def group(self) -> Path:
        """``teacher``, ``student``, ``distilled/<method>`` or ``distilled/<method>-<variant>``."""
        if self.role != DISTILLED:
            return Path(self.role)
        return Path(self.role) / (f"{self.method}-{self.variant}" if self.variant
                                  else self.method)

    @property
    def run_key(self) -> str:
        """``<dataset>-<detector>-seed<k>``: one run of the matrix."""
        return f"{self.key}-seed{self.seed}"

    @property
    def work_dir(self) -> Path:
        return Path("runs") / self.group / self.run_key

    @property
    def log_path(self) -> Path:
        """Everything the run's stage wrote (mmengine's full log, warnings): the console shows
        only its start and result lines (:mod:`dipkd.console`). Beside the work dir, which a
        changed config clears."""
        return Path("runs") / self.group / f"{self.run_key}.log"

    @property
    def model_path(self) -> Path:
        return Path("models") / self.group / f"{self.run_key}.pth"

    @property
    def metrics_path(self) -> Path:
        return Path("metrics") / self.group / f"{self.run_key}.json"

    @property
    def detections_path(self) -> Path:
        """The test-set detections (COCO results JSON) the metrics were computed from: the
        input of the paired bootstrap of the tables' confidence intervals."""
        return Path("detections") / self.group / f"{self.run_key}.json"

    @property
    def curves_path(self) -> Path:
        """Loss and validation mAP per epoch, for ``dvc plots``."""
        return Path("plots") / self.group / f"{self.run_key}.json"

    def tracked_params(self) -> dict:
        """The flat params worth showing in MLflow (the ones that change results)."""
        flat = {"role": self.role, "dataset": self.dataset.name, "detector": self.detector,
                "profile": self.profile, "seed": self.seed, "backbone_depth": self.depth,
                "data.source": self.dataset.source}
        if self.dataset.preset:
            flat["data.preset"] = self.dataset.preset
        if self.role == DISTILLED:
            flat["method"] = self.method
            if self.variant:
                flat["variant"] = self.variant
        for prefix, section in (("data", self.dataset.overrides),
                                ("schedule", _present(self.schedule)),
                                ("train", _present(self.train)), ("model", _present(self.model)),
                                (self.method, self.method_params)):
            for k, v in section.items():
                flat[f"{prefix}.{k}"] = v
        return flat


def _present(section) -> dict:
    """A typed section's set values as params.yaml wrote them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(section).items() if v is not None}


def dataset_spec(params: dict, dataset: str) -> DatasetSpec:
    _choose("dataset", dataset, params["data"])
    data = params["data"][dataset]
    overrides = dict(params["profiles"][params["profile"]]["data"].get(dataset, {}))
    real = data["source"] != SYNTHETIC
    options = {k: v for k, v in data.items() if k not in ("source", "preset")}
    stand_in = REAL_SOURCES[dataset].stand_in if dataset in REAL_SOURCES else None
    return DatasetSpec(name=dataset, source=data["source"],
                       preset=None if real else data.get("preset", stand_in),
                       overrides={} if real else overrides, options=options if real else {})


def variant_name(overrides: dict) -> str:
    """The name of a DIPKD variant run from its overrides of ``methods.dipkd``: the switch
    combination (``sns_rit``) and/or ``<key><value>`` (``tau0.75``, ``mask_rate0.5``), values
    written as ``str()`` writes them (as DVC interpolates them into stage names and paths)."""
    parts = []
    if any(m in overrides for m in DIPKD_MODULES):
        parts.append(modules_name(overrides))
    parts += [f"{k}{overrides[k]}" for k in sorted(overrides) if k not in DIPKD_MODULES]
    return "-".join(parts)


def distill_spec(params: dict, method: str, dataset: str, detector: str,
                 seed: int | None = None, overrides: dict | None = None) -> RunSpec:
    """The student trained beside the frozen teacher with KD ``method`` (``methods.<name>``),
    optionally with some of the method's params overridden (a variant run of Tables 3-5)."""
    _choose("KD method", method, params.get("methods", {}))
    student = run_spec(params, "student", dataset, detector, seed)
    method_params = dict(params["methods"][method])
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        _choose(f"{method} parameter", key, method_params)
        method_params[key] = _coerce(f"{method}.{key}", value, method_params[key])
    return dataclasses.replace(student, role=DISTILLED, method=method,
                               method_params=method_params,
                               variant=variant_name(overrides) if overrides else "")


def _coerce(name: str, value, default):
    """``value`` (possibly text from the command line) as the type of ``default``."""
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ParamsError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise ParamsError(f"{name}: expected a number, got {value!r}") from None
    return value


def teacher_seed(params: dict) -> int:
    """The seed of THE teacher of each dataset and detector (``teacher_seed``, default 0):
    as in KD papers, every student and distilled run of every seed learns from one fixed
    teacher; ``seeds`` vary the student and distilled runs only."""
    return int(params.get("teacher_seed", 0))


def experiment_name(params: dict) -> str:
    """The MLflow experiment of the active profile: ``<mlflow.experiment>/<profile>``
    (``dipkd-repro/smoke``, ``dipkd-repro/paper``, ...), so that smoke runs never mix with
    real ones in ``mlflow ui``."""
    return f"{params.get('mlflow', {}).get('experiment', 'dipkd-repro')}/{params['profile']}"


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied: mappings merged key by key (recursively), any
    other value replaced. A study's overrides of params.yaml, a repro's of the ``slurm:``
    block."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


SCHEDULES = Path("runs") / "schedules"


def schedule_path(role: str, dataset: str, detector: str) -> Path:
    """The resolved schedule of ``role``'s runs on ``dataset`` x ``detector`` (stage
    ``schedules``, ``pipeline/schedules.py``): the teacher's, or the one every other role
    shares."""
    kind = "teacher" if role == "teacher" else "student"
    return SCHEDULES / f"{dataset}-{detector}-{kind}.json"


def run_spec(params: dict, role: str, dataset: str, detector: str,
             seed: int | None = None) -> RunSpec:
    """One run; ``seed`` defaults to the first of ``params["seeds"]`` (the teacher: to
    :func:`teacher_seed`, the only teacher seed there is)."""
    _choose("role", role, ROLES)
    _choose("dataset", dataset, params["datasets"])
    _choose("detector", detector, params["detectors"])
    if role == "teacher":
        seed = teacher_seed(params) if seed is None else seed
        _choose("teacher seed", seed, [teacher_seed(params)])
    else:
        seed = params["seeds"][0] if seed is None else seed
        _choose("seed", seed, params["seeds"])
    prof = params["profiles"][params["profile"]]
    where = f"profiles.{params['profile']}"
    return RunSpec(
        role=role,
        dataset=dataset_spec(params, dataset),
        detector=detector,
        profile=params["profile"],
        seed=int(seed),
        depth=int(params["roles"][role]["depth"]),
        schedule=parse_schedule(role_schedule(prof["schedule"][detector][dataset], role),
                                f"{where}.schedule.{detector}.{dataset}"),
        train=parse_section(TrainSettings, prof["train"], f"{where}.train"),
        model=parse_section(ModelSettings, prof["model"], f"{where}.model"),
        experiment=experiment_name(params),
    )
