"""How much lighter the student is: parameters, FLOPs and latency per image of teacher and
student of each detector, next to the mAP of teacher, student and DIPKD-distilled student.

Writes ``reports/efficiency.md`` and ``reports/efficiency.csv`` (DVC stage ``efficiency``,
``pipeline/efficiency.py``; ``dipkd efficiency`` / ``python -m dipkd.efficiency``).

What is measured, per detector (Faster R-CNN, RetinaNet), role (teacher R50, student R18 by
``roles``) and dataset (its input size):

- **Params (M)**: every parameter of the detector (``sum(p.numel())``): backbone, FPN, heads;
  one class (``ship``). They do not depend on the dataset or the input size.
- **FLOPs (G)**: mmengine's complexity analysis (:class:`mmengine.analysis.FlopAnalyzer`, the
  fvcore counting rules): one multiply-add is one FLOP (so these are GMACs, the convention of
  mmdet's ``get_flops`` tool and of most detection papers). Counted: one network forward of
  one image at the input size of the ``efficiency.scales_from`` profile (default ``paper``,
  whatever the active profile) -- backbone + FPN + dense head on all levels (RPN head or
  RetinaNet head) and, for Faster R-CNN, the RoI box head (two shared FCs + classifier and
  regressor) on as many RoIs as the test-time RPN keeps at most (``test_cfg.rpn.max_per_img``
  of that profile's ``model.rpn_proposals``). The counter covers convolutions, linear layers,
  batch norm and upsampling; not counted: RoIAlign, anchor generation, box decoding, top-k,
  NMS and elementwise ops (ReLU, additions). The input is the scale's ``w x h`` padded to a
  multiple of 32 (the data preprocessor's ``pad_size_divisor``): an image resized to fill
  the scale; a keep-ratio resize of an image of another aspect ratio is smaller.
- **Latency (ms per image)**: ``model.test_step`` (the predict path: normalisation and
  padding, network, post-processing with NMS and rescaling) of one synthetic ``w x h`` image
  (batch 1) in eval mode under ``torch.no_grad()``, after ``warmup`` untimed runs; the median
  of ``runs`` timed runs and their interquartile range. On the CPU with the process's torch
  threads; on the GPU (when CUDA is present) with ``torch.cuda.synchronize()`` around each
  run. The weights are random (seeded): with random scores every candidate passes the score
  thresholds, so top-k and NMS work at their test-time maxima (an upper bound of a trained
  model's post-processing). Absolute numbers depend on the machine and on its load.
- **mAP (%)**: the test mAP of the active profile's runs (``metrics/<group>/<run>.json``,
  ``["metrics"]["mAP"]``): the teacher's (teacher seed), the student's and the DIPKD student's
  (mean over ``seeds``). A missing file gives ``-``; with some seeds missing the cell says
  how many seeds it averages. The DIPKD student has the student's architecture, so its row
  repeats the student's costs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config.params import ParamsError, load_params, teacher_seed
from .models.detectors import display_name as detector_display_name

DEFAULT_WARMUP = 3
DEFAULT_RUNS = 10
DEFAULT_SCALES_FROM = "paper"
PAD_DIVISOR = 32            # models.detectors.DATA_PREPROCESSOR pad_size_divisor
DASH = "-"
ROLES = ("teacher", "student", "dipkd")   # the table's rows per dataset and detector
ROLE_LABELS = {"teacher": "teacher", "student": "student", "dipkd": "DIPKD student"}
CSV_COLUMNS = ("dataset", "detector", "model", "backbone", "params_m", "scale_w", "scale_h",
               "input_w", "input_h", "flops_g", "flops_backbone_g", "flops_neck_g",
               "flops_heads_g", "rois", "cpu_ms", "cpu_q1_ms", "cpu_q3_ms", "gpu_ms",
               "gpu_q1_ms", "gpu_q3_ms", "latency_runs", "mAP", "map_seeds", "map_seeds_expected")
MD_COLUMNS = ("Dataset", "Detector", "Model", "Backbone", "Params (M)", "Input (w×h)",
              "FLOPs (G)", "CPU ms/img", "GPU ms/img", "mAP (%)")


# ---------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """The ``efficiency`` section of params.yaml, resolved for the active profile."""

    scales_from: str = DEFAULT_SCALES_FROM
    warmup: int = DEFAULT_WARMUP
    runs: int = DEFAULT_RUNS


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParamsError(f"params.yaml: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def settings(params: dict) -> Settings:
    """The validated ``efficiency`` section (absent: the defaults): ``scales_from`` (a profile
    with a schedule entry for every detector and dataset of the pipeline), ``warmup`` >= 0,
    ``runs`` >= 1, and ``profiles.<active profile>`` overriding warmup/runs."""
    section = params.get("efficiency") or {}
    if not isinstance(section, dict):
        raise ParamsError("params.yaml: efficiency must be a mapping")
    unknown = set(section) - {"scales_from", "warmup", "runs", "profiles"}
    if unknown:
        raise ParamsError(f"params.yaml: efficiency has unknown keys {', '.join(sorted(unknown))}"
                          "; valid: scales_from, warmup, runs, profiles")
    values = {"warmup": section.get("warmup", DEFAULT_WARMUP),
              "runs": section.get("runs", DEFAULT_RUNS)}
    overrides = section.get("profiles") or {}
    if not isinstance(overrides, dict):
        raise ParamsError("params.yaml: efficiency.profiles must be a mapping of profile names")
    for name, over in overrides.items():
        if name not in params["profiles"]:
            raise ParamsError(f"params.yaml: efficiency.profiles.{name}: unknown profile; "
                              f"valid: {', '.join(params['profiles'])}")
        if not isinstance(over, dict) or not set(over) <= {"warmup", "runs"}:
            raise ParamsError(f"params.yaml: efficiency.profiles.{name} must be a mapping of "
                              f"warmup and/or runs, got {over!r}")
    values.update(overrides.get(params["profile"]) or {})
    scales_from = section.get("scales_from", DEFAULT_SCALES_FROM)
    if scales_from not in params["profiles"]:
        raise ParamsError(f"params.yaml: efficiency.scales_from {scales_from!r} is not a "
                          f"profile; valid: {', '.join(params['profiles'])}")
    for det in params["detectors"]:
        for ds in params["datasets"]:
            _scale(params, scales_from, det, ds)
    _model_settings(params, scales_from)
    return Settings(scales_from=scales_from, warmup=_count(values["warmup"],
                                                            "efficiency.warmup", 0),
                    runs=_count(values["runs"], "efficiency.runs", 1))


def _scale(params: dict, profile: str, detector: str, dataset: str) -> tuple[int, int]:
    """``(w, h)``: ``profiles.<profile>.schedule.<detector>.<dataset>.scale``, typed as the
    schedule of a run (:class:`dipkd.config.params.Schedule`)."""
    from .config.params import parse_schedule
    where = f"profiles.{profile}.schedule.{detector}.{dataset}"
    try:
        entry = params["profiles"][profile]["schedule"][detector][dataset]
    except (KeyError, TypeError):
        raise ParamsError(f"params.yaml: {where} is missing (efficiency.scales_from)") from None
    return parse_schedule(entry, where).scale   # scales_from: a profile validate() skips


def _model_settings(params: dict, profile: str):
    """The proposal counts of ``profiles.<profile>.model`` (Faster R-CNN's test-time RPN),
    typed (:class:`dipkd.config.params.ModelSettings`)."""
    from .config.params import ModelSettings, parse_section
    return parse_section(ModelSettings, params["profiles"][profile].get("model"),
                         f"profiles.{profile}.model (efficiency.scales_from)")


def padded(w: int, h: int, divisor: int = PAD_DIVISOR) -> tuple[int, int]:
    """The network input ``(w, h)`` of a ``w x h`` image after the data preprocessor pads it
    to a multiple of ``divisor``."""
    return (math.ceil(w / divisor) * divisor, math.ceil(h / divisor) * divisor)


# ------------------------------------------------------------------------------------ models

def build_detector(detector: str, depth: int, model_settings, seed: int = 0):
    """A randomly initialised (seeded, PyTorch's default init) one-class detector of the
    pipeline (:func:`dipkd.models.detectors.detector_cfg`, no pretrained weights), in eval
    mode on the CPU."""
    import torch
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from . import mmdet_plugins  # noqa: F401  (registries)
    from .mmdet_config import CLASSES
    from .models.detectors import detector_cfg

    register_all_modules()
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(detector_cfg(detector, int(depth), False, model_settings,
                                                 num_classes=len(CLASSES))))
    return model.eval()


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def rois_per_image(model) -> int:
    """RoIs the box head of a two-stage detector sees per image at test time at most (the
    RPN's ``max_per_img``); 0 for a one-stage detector."""
    if not getattr(model, "with_rpn", False):
        return 0
    return int(model.test_cfg.rpn.max_per_img)


def _tensor_forward_module(model, rois: int):
    """An ``nn.Module`` whose forward maps a normalised, padded ``(1, 3, H, W)`` tensor to
    the raw outputs of the whole network: ``extract_feat`` (backbone + FPN), the dense head
    (RPN head or RetinaNet head) and, for a two-stage detector, the RoI box head on ``rois``
    fixed synthetic proposals (the RPN's NMS is not run: its kept count varies with the
    weights; the RoI head costs the same per RoI wherever it lies)."""
    import torch
    from torch import nn

    class TensorForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.detector = model

        def forward(self, x):
            det = self.detector
            feats = det.extract_feat(x)
            if not getattr(det, "with_rpn", False):
                return det.bbox_head(feats)
            dense = det.rpn_head(feats)
            h, w = x.shape[-2:]
            g = torch.Generator().manual_seed(0)
            side = torch.rand(rois, 2, generator=g) * (min(h, w) / 2 - 8) + 8
            x0 = torch.rand(rois, 2, generator=g) * (torch.tensor([w, h]) - side)
            boxes = torch.cat([torch.zeros(rois, 1), x0, x0 + side], dim=1).to(x)
            out = det.roi_head._bbox_forward(feats, boxes)
            return dense, out["cls_score"], out["bbox_pred"]

    return TensorForward()


def count_flops(model, w: int, h: int) -> dict:
    """FLOPs (multiply-adds) of one forward of ``model`` on a ``w x h`` image padded to a
    multiple of 32: ``{"total", "backbone", "neck", "heads", "rois", "input_w", "input_h"}``
    (module totals; heads = dense head + RoI head)."""
    import torch
    from mmengine.analysis import FlopAnalyzer

    pw, ph = padded(w, h)
    rois = rois_per_image(model)
    wrapper = _tensor_forward_module(model, rois).eval()
    x = torch.randn(1, 3, ph, pw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        analyzer = FlopAnalyzer(wrapper, (x,))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        total = analyzer.total()
        backbone = analyzer.total("detector.backbone")
        neck = analyzer.total("detector.neck")
    return {"total": total, "backbone": backbone, "neck": neck,
            "heads": total - backbone - neck, "rois": rois, "input_w": pw, "input_h": ph}


# ----------------------------------------------------------------------------------- latency

@dataclass(frozen=True)
class Latency:
    """Milliseconds per image of the timed runs: median, first and third quartile."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms


def summarize_times(seconds: list[float]) -> Latency:
    """Median and quartiles (inclusive method; one run: all three equal) in ms."""
    if not seconds:
        raise ValueError("no timed runs")
    ms = [1000.0 * s for s in seconds]
    if len(ms) == 1:
        return Latency(ms[0], ms[0], ms[0], 1)
    q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return Latency(statistics.median(ms), q1, q3, len(ms))


def _synthetic_batch(w: int, h: int, seed: int = 0) -> dict:
    """One ``w x h`` uint8 image with the meta information of a test image resized to
    exactly that size, as the test dataloader gives it to ``test_step``."""
    import torch
    from mmdet.structures import DetDataSample

    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    sample = DetDataSample()
    sample.set_metainfo(dict(img_id=0, img_path="synthetic", ori_shape=(h, w),
                             img_shape=(h, w), scale_factor=(1.0, 1.0)))
    return {"inputs": [img], "data_samples": [sample]}


def measure_latency(model, w: int, h: int, *, warmup: int = DEFAULT_WARMUP,
                    runs: int = DEFAULT_RUNS, device: str = "cpu") -> Latency:
    """Per-image inference time of ``model.test_step`` on one synthetic ``w x h`` image
    (batch 1, eval mode, ``torch.no_grad()``): ``warmup`` untimed runs, then the median and
    quartiles of ``runs`` timed runs. On CUDA the device is synchronised before the clock
    starts and before it stops."""
    import torch

    model = model.to(device).eval()
    cuda = torch.device(device).type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            data = _synthetic_batch(w, h)
            sync()
            t0 = time.perf_counter()
            model.test_step(data)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return summarize_times(times)


# --------------------------------------------------------------------------------------- mAP

@dataclass(frozen=True)
class MapCell:
    """The mean test mAP (%) of a run over its seeds: ``None`` when no metrics file has it."""

    mean: float | None
    found: int
    expected: int


def read_map(path: Path) -> float | None:
    """``["metrics"]["mAP"]`` of a metrics JSON in %; ``None`` if the file or value is
    missing."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())["metrics"]["mAP"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a metrics file with metrics.mAP") from None
    if value is None:
        return None
    return 100.0 * float(value)


def metrics_files(params: dict, role: str, dataset: str, detector: str,
                  metrics_dir: Path = Path("metrics")) -> list[Path]:
    """The metrics files of a row: the teacher's (teacher seed), or one per seed of the
    student's / DIPKD student's runs."""
    from .reports.tables.table1 import specs_for
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    specs = specs_for(params, "distilled/dipkd" if role == "dipkd" else role, dataset, detector)
    return [Path(metrics_dir) / s.metrics_path.relative_to("metrics") for s in specs]


def map_cell(params: dict, role: str, dataset: str, detector: str,
             metrics_dir: Path = Path("metrics")) -> MapCell:
    values = [read_map(p) for p in metrics_files(params, role, dataset, detector,
                                                 metrics_dir)]
    found = [v for v in values if v is not None]
    return MapCell(statistics.fmean(found) if found else None, len(found), len(values))


# ------------------------------------------------------------------------------------- table

@dataclass
class Row:
    dataset: str
    detector: str
    role: str                   # teacher, student, dipkd
    depth: int
    params: int
    scale: tuple[int, int]      # (w, h)
    flops: dict
    latency: dict = field(default_factory=dict)    # device ("cpu", "cuda") -> Latency
    mAP: MapCell = MapCell(None, 0, 0)


def _num(v, digits: int):
    return "" if v is None else round(v, digits)


def csv_text(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        cpu, gpu = r.latency.get("cpu"), r.latency.get("cuda")
        runs = next((lat.runs for lat in (cpu, gpu) if lat is not None), None)
        writer.writerow({
            "dataset": r.dataset, "detector": r.detector, "model": r.role,
            "backbone": f"R{r.depth}", "params_m": round(r.params / 1e6, 3),
            "scale_w": r.scale[0], "scale_h": r.scale[1],
            "input_w": r.flops["input_w"], "input_h": r.flops["input_h"],
            "flops_g": round(r.flops["total"] / 1e9, 3),
            "flops_backbone_g": round(r.flops["backbone"] / 1e9, 3),
            "flops_neck_g": round(r.flops["neck"] / 1e9, 3),
            "flops_heads_g": round(r.flops["heads"] / 1e9, 3), "rois": r.flops["rois"],
            "cpu_ms": _num(cpu and cpu.median_ms, 1), "cpu_q1_ms": _num(cpu and cpu.q1_ms, 1),
            "cpu_q3_ms": _num(cpu and cpu.q3_ms, 1),
            "gpu_ms": _num(gpu and gpu.median_ms, 2), "gpu_q1_ms": _num(gpu and gpu.q1_ms, 2),
            "gpu_q3_ms": _num(gpu and gpu.q3_ms, 2), "latency_runs": "" if runs is None else runs,
            "mAP": _num(r.mAP.mean, 2), "map_seeds": r.mAP.found,
            "map_seeds_expected": r.mAP.expected})
    return out.getvalue()


def _ratio(value: float, ref: float | None) -> str:
    return "" if not ref else f" ({value / ref:.2f}×)"


def _latency_text(lat: Latency | None, ref: Latency | None, digits: int) -> str:
    if lat is None:
        return DASH
    return (f"{lat.median_ms:.{digits}f} (IQR {lat.iqr_ms:.{digits}f})"
            + _ratio(lat.median_ms, ref and ref.median_ms))


def _map_text(cell: MapCell) -> str:
    if cell.mean is None:
        return DASH
    partial = f" ({cell.found}/{cell.expected} seeds)" if cell.found < cell.expected else ""
    return f"{cell.mean:.1f}{partial}"


def markdown_table(rows: list[Row]) -> str:
    """The Markdown table: the student's and DIPKD student's costs with their ratio to the
    teacher's of the same dataset and detector."""
    teachers = {(r.dataset, r.detector): r for r in rows if r.role == "teacher"}
    lines = ["| " + " | ".join(MD_COLUMNS) + " |",
             "|" + "|".join(":---" if i < 4 else "---:" for i in range(len(MD_COLUMNS))) + "|"]
    for r in rows:
        t = teachers.get((r.dataset, r.detector))
        t = None if t is None or t is r else t
        cells = [r.dataset, detector_display_name(r.detector), ROLE_LABELS[r.role],
                 f"R{r.depth}",
                 f"{r.params / 1e6:.1f}" + _ratio(r.params, t and t.params),
                 f"{r.scale[0]}×{r.scale[1]}",
                 f"{r.flops['total'] / 1e9:.1f}" + _ratio(r.flops["total"],
                                                           t and t.flops["total"]),
                 _latency_text(r.latency.get("cpu"), t and t.latency.get("cpu"), 0),
                 _latency_text(r.latency.get("cuda"), t and t.latency.get("cuda"), 1),
                 _map_text(r.mAP)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_text(devices) -> str:
    import torch

    from .machine import cpu_model
    text = (f"CPU {cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads); torch {torch.__version__}")
    if "cuda" in devices:
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    elif not torch.cuda.is_available():
        text += "; no CUDA here (GPU column -)"
    return text


def header(params: dict, st: Settings, rows: list[Row], devices) -> str:
    prof = params["profile"]
    rois = sorted({r.flops["rois"] for r in rows if r.flops["rois"]})
    runs = next((lat.runs for r in rows for lat in r.latency.values()), None)
    plural = "s" if st.warmup != 1 else ""
    seeds = params["seeds"]
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1 else
                 f"mean over seeds {seeds}")
    note = " Smoke profile: its mAP numbers only prove the plumbing." if prof == "smoke" else ""
    return (
        f"Costs at the `{st.scales_from}` profile's input sizes (w×h of its schedule scale) "
        f"whatever the active profile; mAP (COCO bbox, test set) from the active profile "
        f"`{prof}`: teacher seed {teacher_seed(params)}, student and DIPKD student "
        f"{seed_text}; `-` = no metrics file.{note}\n\n"
        f"- **Params**: all parameters of the one-class detector; (×) = ratio to the teacher "
        f"of the same detector.\n"
        f"- **FLOPs**: mmengine FlopAnalyzer (fvcore rules: 1 multiply-add = 1 FLOP, i.e. "
        f"GMACs) of one forward on the scale w×h padded to a multiple of {PAD_DIVISOR} "
        f"(an image resized to fill the scale): backbone + FPN + dense head (RPN / RetinaNet "
        f"head, all levels)"
        + (f" + Faster R-CNN's RoI box head on {', '.join(map(str, rois))} RoIs (the test-time "
           f"RPN maximum)" if rois else "")
        + "; conv, linear, BN, upsampling counted; RoIAlign, anchors, box decoding, top-k, "
        "NMS and elementwise ops not counted.\n"
        + (f"- **Latency** per image: median of {runs} timed runs after {st.warmup} warm-up "
           f"run{plural}, IQR = their interquartile range, (×) = ratio to the teacher; "
           f"`test_step` of one synthetic w×h image (batch 1, eval, no_grad: normalisation, "
           f"padding, network, NMS, rescaling) with random weights, so every candidate passes "
           f"the score thresholds (post-processing at its maxima)." if runs else
           "- **Latency**: not measured in this run.")
        + f" {machine_text(devices)}. Absolute times depend on the machine and its load.\n"
        f"- The DIPKD student has the student's architecture: its row repeats the student's "
        f"costs.")


def write_report(rows: list[Row], head: str, out_dir: Path = Path("reports"),
                 name: str = "efficiency") -> tuple[Path, Path]:
    """``<out_dir>/<name>.md`` and ``.csv``, each written atomically."""
    from .reports.common import atomic_write
    out_dir = Path(out_dir)
    md = (f"# Efficiency: teacher vs student, and what distillation buys\n\n{head}\n\n"
          + markdown_table(rows))
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    atomic_write(md_path, md)
    atomic_write(csv_path, csv_text(rows))
    return md_path, csv_path


def resolve_devices(device: str) -> list[str]:
    """``auto``: the CPU, and CUDA when present; ``cpu``; ``cuda`` (an error without it);
    ``none``: no latency."""
    import torch
    if device == "none":
        return []
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available on this machine")
        return ["cuda"]
    if device == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, none")


def _log(msg: str) -> None:
    print(f"[dipkd] {msg}", file=sys.stderr, flush=True)


def collect(params: dict, st: Settings, *, devices=("cpu",), datasets=None, detectors=None,
            metrics_dir: Path = Path("metrics"), log=_log) -> list[Row]:
    """Measure every (dataset, detector) of the pipeline (or the given subsets): one model
    per detector and role, FLOPs and latency at each dataset's scale, and the mAP cells."""
    datasets = list(params["datasets"] if datasets is None else datasets)
    detectors = list(params["detectors"] if detectors is None else detectors)
    for ds in datasets:
        if ds not in params["datasets"]:
            raise ParamsError(f"unknown dataset {ds!r}; valid: {', '.join(params['datasets'])}")
    for det in detectors:
        if det not in params["detectors"]:
            raise ParamsError(f"unknown detector {det!r}; valid: "
                              f"{', '.join(params['detectors'])}")
    model_settings = _model_settings(params, st.scales_from)
    measured: dict[tuple[str, str, str], Row] = {}
    for det in detectors:
        for role in ("teacher", "student"):
            depth = int(params["roles"][role]["depth"])
            model = build_detector(det, depth, model_settings)
            n_params = count_params(model)
            for ds in datasets:
                w, h = _scale(params, st.scales_from, det, ds)
                t0 = time.perf_counter()
                flops = count_flops(model, w, h)
                row = Row(ds, det, role, depth, n_params, (w, h), flops)
                for device in devices:
                    row.latency[device] = measure_latency(model, w, h, warmup=st.warmup,
                                                          runs=st.runs, device=device)
                model.to("cpu")
                measured[(ds, det, role)] = row
                lat = ", ".join(f"{d} {x.median_ms:.1f} ms" for d, x in row.latency.items())
                log(f"{ds} {det} {role} R{depth}: {n_params / 1e6:.2f} M params, "
                    f"{flops['total'] / 1e9:.2f} GFLOPs at {w}x{h}"
                    + (f", {lat}" if lat else "") + f" ({time.perf_counter() - t0:.0f} s)")
            del model
    rows = []
    for ds in datasets:
        for det in detectors:
            for role in ROLES:
                base = measured[(ds, det, "student" if role == "dipkd" else role)]
                rows.append(Row(ds, det, role, base.depth, base.params, base.scale, base.flops,
                                dict(base.latency),
                                map_cell(params, role, ds, det, metrics_dir)))
    return rows


def run_report(params: dict, *, out_dir: Path = Path("reports"),
               metrics_dir: Path = Path("metrics"), device: str = "auto",
               warmup: int | None = None, runs: int | None = None, datasets=None,
               detectors=None, log=_log) -> tuple[Path, Path]:
    """Measure and write ``<out_dir>/efficiency.{md,csv}``; ``warmup``/``runs`` override
    params.yaml's ``efficiency`` settings."""
    st = settings(params)
    if warmup is not None:
        st = Settings(st.scales_from, _count(warmup, "--warmup", 0), st.runs)
    if runs is not None:
        st = Settings(st.scales_from, st.warmup, _count(runs, "--runs", 1))
    devices = resolve_devices(device)
    rows = collect(params, st, devices=devices, datasets=datasets, detectors=detectors,
                   metrics_dir=metrics_dir, log=log)
    return write_report(rows, header(params, st, rows, devices), out_dir)


# ----------------------------------------------------------------------------------- command

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Efficiency table: parameters (M), FLOPs (G) at the paper's input sizes "
                    "and inference latency per image (batch 1; CPU, and GPU when CUDA is "
                    "present) of teacher and student of each detector, next to the teacher's, "
                    "student's and DIPKD student's test mAP. Writes <out-dir>/efficiency.md "
                    "and efficiency.csv (the DVC stage `efficiency` runs this with "
                    "params.yaml's settings).",
        epilog="Settings come from params.yaml's `efficiency` section (scales_from, warmup, "
               "runs, per-profile overrides); --warmup/--runs override it. Latency on a "
               "shared CPU is noisy: compare rows measured in one run, not across machines.")
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    parser.add_argument("--out-dir", default="reports", type=Path,
                        help="where efficiency.md/.csv go (default: %(default)s)")
    parser.add_argument("--metrics-dir", default="metrics", type=Path,
                        help="the evaluated runs' metrics JSONs (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "none"),
                        help="latency on: auto = CPU and CUDA if present; none = skip latency "
                             "(params and FLOPs only) (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs before timing (default: params.yaml efficiency)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per model and size (default: params.yaml efficiency)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="DATASET",
                        help="only these datasets (default: params.yaml datasets)")
    parser.add_argument("--detectors", nargs="+", default=None, metavar="DETECTOR",
                        help="only these detectors (default: params.yaml detectors)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dipkd efficiency [ARGS...]`` / ``python -m dipkd.efficiency``: exit code 0, or 2
    with a one-line error."""
    args = build_parser().parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        params = load_params(args.params)
        md, csv_path = run_report(params, out_dir=args.out_dir, metrics_dir=args.metrics_dir,
                                  device=args.device, warmup=args.warmup, runs=args.runs,
                                  datasets=args.datasets, detectors=args.detectors)
    except (ParamsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(md.read_text())
    print(f"[dipkd] wrote {md} and {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
