"""What each loss term does, measured: for every KD method at its params.yaml defaults, the
gradient norm each loss term puts on the student's distilled FPN features, next to the
summed detection losses' (``dipkd/kd_terms.py``), on a paper-sized batch.

For each detector and method the distiller is built as the pipeline builds it
(``distill_spec`` + ``build_distill_config``, so ``fpn_levels`` and ``inherit`` act as in a
training run), with the ``--profile``'s model settings (proposal counts) and input scale of
``--dataset`` (``paper``: Faster R-CNN at 1000x600, RetinaNet at 512x512) and randomly
initialised backbones (``pretrained: false``: offline). The frozen teacher is the trained
one at the teacher stage's ``model_path`` when it exists, else a randomly initialised R50
saved to a temporary checkpoint (the report says which). After ``init_weights()`` one
``loss`` runs on a batch of two synthetic ssdd-like SAR scenes (``dipkd.datasets.synthetic``,
fixed seed) resized to the scale, through the model's own data preprocessor.

    python benchmarks/kd_terms.py [--out reports/kd_terms.md] [--methods dipkd fgd ...]
                                  [--detectors faster_rcnn retinanet] [--seed 0]

A method may carry overrides of its params: ``dipkd:rit_form=paper`` (the default list adds
this one, DIPKD with RIT as printed in the paper, next to the authors' form).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dipkd.kd_terms import INERT_RATIO  # noqa: E402
from dipkd.machine import cpu_model  # noqa: E402

EXTRA_VARIANTS = ["dipkd:rit_form=paper"]
BATCH = 2
DETECTOR_NAMES = {"faster_rcnn": "Faster R-CNN", "retinanet": "RetinaNet"}


def parse_method(text: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--methods {text!r}: expected name:key=value[,key=value]")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def method_label(name: str, overrides: dict) -> str:
    if not overrides:
        return name
    return f"{name} ({', '.join(f'{k}={v}' for k, v in overrides.items())})"


def load(profile: str, params_path: Path) -> dict:
    """params.yaml on ``profile``, with backbones from random initialisation (offline)."""
    from dipkd.config.params import load_params, validate
    params = load_params(params_path)
    params["profile"] = profile
    params["profiles"][profile]["train"]["pretrained"] = False
    validate(params)
    return params


def scenes(width: int, height: int, seed: int, batch: int = BATCH):
    """``batch`` synthetic ssdd-like scenes as (uint8 3xHxW tensor, Kx4 float boxes) at
    ``width`` x ``height``: rendered at SSDD's size (about 500 px wide, same aspect) with a
    few ships, then resized like the pipeline's ``Resize`` (boxes scaled with the image)."""
    from dipkd.datasets.synthetic import make_config, render_scene
    f = max(1.0, width / 500)
    w0, h0 = round(width / f), round(height / f)
    cfg = make_config("ssdd-like", width_range=(w0, w0), height_range=(h0, h0),
                      empty_fraction=0.0, mean_ships=3.0)
    out = []
    for i in range(batch):
        scene = render_scene(cfg, np.random.default_rng([seed, i]))
        img = torch.from_numpy(scene.image).float()[None, None]
        img = torch.nn.functional.interpolate(img, size=(height, width), mode="bilinear",
                                              align_corners=False)
        img = img.round().clamp(0, 255).to(torch.uint8)[0].expand(3, -1, -1).contiguous()
        boxes = torch.as_tensor(scene.boxes, dtype=torch.float32).reshape(-1, 4)
        boxes = boxes * torch.tensor([width / w0, height / h0] * 2)
        out.append((img, boxes))
    return out


def make_batch(model, width: int, height: int, seed: int):
    """The scenes through ``model``'s data preprocessor (normalised, padded):
    ``(inputs, data_samples)``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    images, samples = [], []
    for img, boxes in scenes(width, height, seed):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                            scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=boxes,
                                      labels=torch.zeros(len(boxes), dtype=torch.long))
        images.append(img)
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    return data["inputs"], data["data_samples"]


def teacher_checkpoint(params, dataset: str, detector: str, tmp: Path) -> tuple[Path, str]:
    """The trained teacher of the pipeline if there is one, else a randomly initialised R50
    saved to ``tmp`` (as ``tests/_helpers.py::build_distiller``). Returns (path, what)."""
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    from dipkd.config.params import run_spec
    from dipkd.models.detectors import detector_cfg
    spec = run_spec(params, "teacher", dataset, detector)
    trained = REPO / spec.model_path
    if trained.is_file():
        return trained, f"trained teacher `{spec.model_path}`"
    teacher = MODELS.build(ConfigDict(detector_cfg(detector, spec.depth, False, spec.model)))
    teacher.init_weights()
    ckpt = tmp / f"teacher-{detector}.pth"
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, ckpt)
    return ckpt, f"randomly initialised R{spec.depth} (no trained teacher at `{spec.model_path}`)"


def build(params, method: str, overrides: dict, dataset: str, detector: str, ckpt: Path,
          seed: int = 0):
    """The distiller of ``method`` as ``pipeline/train.py`` builds it, initialised. The
    RNG is seeded before building and again before ``init_weights`` (which initialises the
    student first), so every method starts from the same student whatever its KD modules
    draw when they are built."""
    from mmdet.registry import MODELS

    from dipkd.mmdet_config import build_distill_config
    from dipkd.config.params import distill_spec, run_spec
    spec = distill_spec(params, method, dataset, detector, overrides=overrides or None)
    teacher = run_spec(params, "teacher", dataset, detector)
    cfg = build_distill_config(spec, teacher, ckpt)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    torch.manual_seed(seed)
    model.init_weights()
    return model.train(), spec


def quiet_init_logs() -> None:
    """mmengine logs every parameter's initialisation at INFO: keep warnings only."""
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)


def run(params, methods: list[str], detectors: list[str], seed: int, dataset: str = "ssdd",
        scale: tuple[int, int] | None = None) -> dict:
    """Measure every (detector, method); returns the results and the setting."""
    from mmdet.utils import register_all_modules

    from dipkd import mmdet_plugins  # noqa: F401  (registries)
    from dipkd.config.params import run_spec
    from dipkd.kd_terms import measure
    register_all_modules()
    quiet_init_logs()
    where = machine()   # the commit of the code that runs, read before it runs
    results, teachers, settings = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for det in detectors:
            student = run_spec(params, "student", dataset, det)
            width, height = scale or student.schedule.scale
            torch.manual_seed(seed)
            ckpt, teachers[det] = teacher_checkpoint(params, dataset, det, Path(tmp))
            batch = None
            for text in methods:
                name, overrides = parse_method(text)
                t0 = time.perf_counter()
                model, spec = build(params, name, overrides, dataset, det, ckpt, seed)
                if batch is None:
                    batch = make_batch(model, width, height, seed)
                    boxes = [s.gt_instances.bboxes for s in batch[1]]
                    settings[det] = dict(width=width, height=height,
                                         input=tuple(batch[0].shape[-2:]),
                                         boxes=[len(b) for b in boxes],
                                         sides=torch.cat([(b[:, 2:] - b[:, :2]) for b in boxes]),
                                         model=dataclasses.asdict(student.model))
                torch.manual_seed(seed)
                rows = measure(model, *batch)
                levels = model.fpn_levels
                del model
                seconds = time.perf_counter() - t0
                label = method_label(name, overrides)
                print(f"[kd-terms] {det} {label}: {seconds:.1f} s; "
                      + ", ".join(f"{r.name} {r.ratio:.2e}" for r in rows[1:]), flush=True)
                results.append(dict(detector=det, method=label, rows=rows, levels=levels,
                                    inherit=bool(spec.method_params.get("inherit", False))))
    return dict(results=results, teachers=teachers, settings=settings, seed=seed,
                profile=params["profile"], dataset=dataset, machine=where)


def _git() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" with uncommitted changes" if dirty else "")


def machine() -> str:
    """Date, CPU model and cores, git commit, torch version."""
    return (f"{datetime.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores "
            f"({torch.get_num_threads()} torch threads), git {_git()}, "
            f"torch {torch.__version__}")


def _num(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return "0" if x == 0 else f"{x:.3g}" if 1e-2 <= abs(x) < 1e4 else f"{x:.2e}"


def _levels(levels) -> str:
    return "all" if levels is None else ",".join(map(str, levels))


def report(measured: dict, machine_line: str | None = None) -> str:
    """Markdown of :func:`run`'s results: per detector one table with a row per (method,
    term), then the inert KD terms."""
    lines = [
        "# What each loss term does, measured",
        "",
        f"Run: {machine_line or measured.get('machine') or machine()}; "
        f"seed {measured['seed']}.",
        "",
        f"Each row: one loss term of one distiller training step. **grad norm** is the L2 "
        f"norm of d(term)/d(student FPN features) over the distilled levels (`fpn_levels`, "
        f"counted from the finest), **ratio** that norm over the summed detection losses' "
        f"(first row of each method), **inert** a ratio below {INERT_RATIO:g}: next to the "
        f"detection gradient the term cannot move the student. Loss values are the terms "
        f"as they enter the total (weights applied).",
        "",
        f"Setting: every method at its `params.yaml` defaults, built as the pipeline builds "
        f"it (`distill_spec` + `build_distill_config` on `{measured['dataset']}`, so "
        f"`fpn_levels` and `inherit` act as in training), model settings of the "
        f"`{measured['profile']}` profile, backbones randomly initialised "
        f"(`pretrained: false`), then `init_weights()` (with `inherit` the student's neck and "
        f"heads are copied from the teacher); one `loss` in train mode on a batch of "
        f"{BATCH} synthetic ssdd-like SAR scenes (`dipkd.datasets.synthetic`, rendered about "
        f"500 px wide and resized to the input scale), through the model's data "
        f"preprocessor; every method of a detector starts from the same student weights "
        f"(before `inherit`) and sees the same batch. Numbers of random-weight models: they "
        f"show the scale of each term at the start of training, not during it (the MLflow "
        f"metrics `kd_grad/<term>` of a training run show that); terms on the dense head's "
        f"scores (`*_cls` of FRS, ARSD, IFKD; RIT) see scores that are still near their "
        f"initial constant, so they may grow once the heads learn.",
        "",
    ]
    for det, st in measured["settings"].items():
        sides = st["sides"]
        model = ", ".join(f"{k} {v}" for k, v in st["model"].items()) if det == "faster_rcnn" \
            else "no proposal settings (one-stage)"
        lines += [
            f"## {DETECTOR_NAMES.get(det, det)} R50 -> R18, {st['width']}x{st['height']}",
            "",
            f"Teacher: {measured['teachers'][det]}. Input {st['input'][1]}x{st['input'][0]} "
            f"after padding, batch {BATCH}, {' + '.join(map(str, st['boxes']))} ships "
            f"(box sides {float(sides.min()):.0f}-{float(sides.max()):.0f} px, median "
            f"{float(sides.median()):.0f}); {model}.",
            "",
            "| method | levels | inherit | term | loss value | grad norm | ratio | |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for res in (r for r in measured["results"] if r["detector"] == det):
            for i, row in enumerate(res["rows"]):
                term = "detection (sum)" if row.kind == "total" else (
                    f"`{row.name}`" + (" (KD)" if row.kind == "kd" else ""))
                flag = "inert" if row.kind != "total" and row.inert else ""
                head = (f"| {res['method']} | {_levels(res['levels'])} | "
                        f"{'yes' if res['inherit'] else 'no'} ") if i == 0 else "| | | "
                lines.append(f"{head}| {term} | {_num(row.value)} | {_num(row.grad_norm)} | "
                             f"{_num(row.ratio)} |{f' {flag} ' if flag else ' '}|")
        lines.append("")
    inert = [(DETECTOR_NAMES.get(r["detector"], r["detector"]), r["method"], row)
             for r in measured["results"] for row in r["rows"] if row.kind == "kd" and row.inert]
    lines += ["## Inert KD terms (ratio < %g)" % INERT_RATIO, ""]
    lines += [f"- {det}, {method}: `{row.name}` (ratio {_num(row.ratio)})"
              for det, method, row in inert] or ["- none"]
    return "\n".join(lines + [""])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--methods", nargs="+",
                        help="methods of params.yaml (default: all of `methods`, plus "
                             + ", ".join(EXTRA_VARIANTS) + ")")
    parser.add_argument("--detectors", nargs="+", default=["faster_rcnn", "retinanet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="paper",
                        help="whose model settings and input scale (default: paper)")
    parser.add_argument("--dataset", default="ssdd")
    parser.add_argument("--scale", type=int, nargs=2, metavar=("W", "H"),
                        help="input scale instead of the profile's (tests)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args(argv)
    params = load(args.profile, args.params)
    methods = args.methods or [*params["methods"], *EXTRA_VARIANTS]
    measured = run(params, methods, args.detectors, args.seed, args.dataset,
                   tuple(args.scale) if args.scale else None)
    text = report(measured)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
