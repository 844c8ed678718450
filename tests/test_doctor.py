"""``dipkd doctor`` (issue 25): the whole check list passes on the CPU at the smoke profile's
sizes, with DVC and MLflow impossible to import; a check that finds a problem FAILs its own
line and makes the exit code 1 (a KD loss whose device copy computes another value, a dataset
with a missing image or none at all, ImageNet weights that are absent offline or lack a
tensor); the batch-8 summary and the numeric helpers on their own."""
import copy
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("dvc", "mlflow")


def _workspace(ws: Path, params: dict, datasets=None) -> Path:
    """A params.yaml and the smoke profile's synthetic datasets under ws/data, made as the
    prepare stage makes them; returns the params file."""
    from dipkd.config.params import dataset_spec
    from dipkd.datasets.synthetic import generate_dataset
    params = copy.deepcopy(params)
    params["profile"] = "smoke"
    for ds in params["datasets"] if datasets is None else datasets:
        spec = dataset_spec(params, ds)
        generate_dataset(ws / "data" / ds, preset=spec.preset, seed=0, **spec.overrides)
    path = ws / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _blocker(folder: Path) -> Path:
    """Packages named dvc and mlflow whose import fails, to put first on sys.path."""
    for name in BLOCKED:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the doctor must not import it')\n")
    return folder


def _rows(report: str) -> dict:
    """check name -> (result, detail) of the report's table."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[1] in ("PASS", "FAIL", "SKIP"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def _doctor(tmp_path, params_path, checks, device="cpu", profile=None) -> tuple[int, dict]:
    """Run the doctor in-process; (exit code, report rows)."""
    from dipkd.doctor import run_doctor
    out = tmp_path / "report" / "doctor.md"
    code = run_doctor(Namespace(device=device, profile=profile, out=str(out),
                                params=str(params_path), checks=checks))
    return code, _rows(out.read_text()) if out.is_file() else {}


# --------------------------------------------------------------- the whole run on the CPU

@pytest.mark.slow
def test_doctor_passes_on_cpu_at_smoke_sizes_without_dvc_and_mlflow(tmp_path, params):
    from dipkd.doctor.train_step import planned_runs
    from dipkd.kd.methods import kd_methods
    params_path = _workspace(tmp_path / "ws", params)
    blocked = _blocker(tmp_path / "blocked")
    # one thread: on a 2-core machine shared with other jobs torch's two OpenMP threads make
    # the R50 step 10-20x slower (measured 5-7 s vs 0.3 s for R50 forward + backward)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), str(REPO)]),
               OMP_NUM_THREADS="1")
    probe = subprocess.run([sys.executable, "-c", "import mlflow"], env=env, cwd=REPO,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr     # the block works
    out = tmp_path / "doctor.md"
    proc = subprocess.run([sys.executable, "-m", "dipkd.cli", "doctor", "--device", "cpu",
                           "--profile", "smoke", "--out", str(out),
                           "--params", str(params_path)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = out.read_text()
    head = report.splitlines()[2]
    for part in ("device cpu", "profile smoke", f"torch {torch.__version__}", "mmcv 2.",
                 "commit "):
        assert part in head, head
    rows = _rows(report)
    smoke = dict(params, profile="smoke")
    expected = (["environment", "mmcv nms", "mmcv RoIAlign fwd+bwd", "SNS fwd+bwd"]
                + [f"KD {m}" for m in kd_methods()]
                + [f"train {what} {det}" for what, det, _ in planned_runs(smoke)]
                + ["train batch 8 fits", "ImageNet R50", "ImageNet R18"]
                + [f"data {ds}" for ds in params["datasets"]])
    assert sorted(rows) == sorted(expected)
    assert rows["train batch 8 fits"][0] == "SKIP"               # CUDA only
    assert rows["ImageNet R50"][0] == rows["ImageNet R18"][0] == "SKIP"   # pretrained: false
    assert all(result == "PASS" for name, (result, _) in rows.items()
               if name not in ("train batch 8 fits", "ImageNet R50", "ImageNet R18"))
    assert "ssdd 160x112, batch 2" in rows["train dipkd faster_rcnn"][1]
    assert "s/step" in rows["train teacher retinanet"][1]
    assert "fused numba kernel" in rows["SNS fwd+bwd"][1]
    # one console line per check, then the summary; the CPU run says what it did not cover
    lines = [ln for ln in proc.stdout.splitlines() if ln[:4] in ("PASS", "FAIL", "SKIP")]
    assert len(lines) == len(rows)
    assert f"{len(rows) - 3} passed, 0 failed, 3 skipped" in proc.stdout
    assert "CUDA path" in report and "was not exercised" in report
    assert (tmp_path / "doctor.log").is_file()                   # mmengine's output went there


# ---------------------------------------------------------------- broken checks FAIL

def test_a_kd_loss_that_differs_on_the_device_fails_its_line(tmp_path, params, monkeypatch):
    from dipkd.doctor import method
    from dipkd.kd.dipkd_loss import FitNetLoss
    real_copy = method.device_copy

    def broken_copy(module, device):     # a device whose FitNet loss comes out 10% larger
        moved = real_copy(module, device)
        if isinstance(moved, FitNetLoss):
            moved.weight *= 1.1
        return moved
    monkeypatch.setattr(method, "device_copy", broken_copy)
    monkeypatch.setattr(method, "registered_methods", lambda: ["fitnet", "mgd"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code, rows = _doctor(tmp_path, path, "kd")
    assert code == 1
    assert rows["KD fitnet"][0] == "FAIL" and "loss_kd_mse" in rows["KD fitnet"][1]
    assert rows["KD mgd"][0] == "PASS"
    monkeypatch.setattr(method, "device_copy", real_copy)
    assert _doctor(tmp_path, path, "kd")[0] == 0


def test_bad_and_absent_datasets_fail_their_lines(tmp_path, params):
    path = _workspace(tmp_path, params, datasets=["ssdd"])
    code, rows = _doctor(tmp_path, path, "data")
    assert code == 1
    assert rows["data ssdd"][0] == "PASS" and "12 train / 6 test images" in rows["data ssdd"][1]
    assert rows["data hrsid"][0] == "FAIL"
    assert "run `dvc repro prepare@hrsid`" in rows["data hrsid"][1]
    victim = sorted((tmp_path / "data" / "ssdd" / "images" / "test").iterdir())[0]
    victim.unlink()
    _, rows = _doctor(tmp_path, path, "data")
    assert rows["data ssdd"][0] == "FAIL" and victim.name in rows["data ssdd"][1]


# ------------------------------------------------------------------------- ImageNet files

def _torchvision_state(depth: int, seed: int) -> dict:
    """A torchvision ResNet state dict with values unlike any initialisation."""
    import torchvision
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point()
            else torch.full_like(v, 1000 + seed) for k, v in model.state_dict().items()}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under TORCH_HOME and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *_args, **_kwargs):
        raise OSError(f"network unreachable: {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def test_imagenet_weights_load_key_for_key_or_fail(tmp_path, params, offline_hub):
    from dipkd.models.pretrained import cached_path, weights_url
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code, rows = _doctor(tmp_path, path, "weights", profile="paper")   # pretrained: true
    assert code == 1 and rows["ImageNet R50"][0] == rows["ImageNet R18"][0] == "FAIL"
    assert "could not be downloaded" in rows["ImageNet R18"][1]
    for depth, seed in ((50, 1), (18, 2)):
        file = cached_path(weights_url(depth))
        file.parent.mkdir(parents=True, exist_ok=True)
        state = _torchvision_state(depth, seed)
        if depth == 18:
            del state["layer3.1.bn2.running_var"]       # a tensor the backbone cannot load
        torch.save(state, file)
    code, rows = _doctor(tmp_path, path, "weights", profile="paper")
    assert code == 1
    assert rows["ImageNet R50"][0] == "PASS" and "backbone tensors = the file's" in \
        rows["ImageNet R50"][1]
    assert rows["ImageNet R18"][0] == "FAIL" and "1 backbone tensors missing" in \
        rows["ImageNet R18"][1]
    code, rows = _doctor(tmp_path, path, "weights", profile="smoke")   # pretrained: false
    assert code == 0 and rows["ImageNet R50"][0] == "SKIP"


# ---------------------------------------------------------------------- parts on their own

def test_batch8_summary_fails_when_a_run_does_not_fit():
    from dipkd.doctor.core import Context, CheckFailed, CheckSkipped
    from dipkd.doctor.train_step import check_batch8
    with pytest.raises(CheckSkipped):
        check_batch8(Context({}, torch.device("cpu"), Path(".")))
    ctx = Context({}, torch.device("cuda", 0), Path("."))
    ctx.batch8 += [("train student faster_rcnn", True, "peak 3.10 GiB"),
                   ("train fgd faster_rcnn", True, "peak 11.50 GiB")]
    assert "largest: train fgd faster_rcnn, peak 11.50 GiB" in check_batch8(ctx)
    ctx.batch8.append(("train teacher faster_rcnn", False, "OutOfMemoryError: CUDA out"))
    with pytest.raises(CheckFailed, match="train teacher faster_rcnn"):
        check_batch8(ctx)


def test_same_random_gives_every_device_the_cpu_stream():
    from dipkd.doctor.method import same_random
    expected = torch.rand(3, 4, generator=torch.Generator().manual_seed(7))
    with same_random(7):
        got = torch.rand((3, 4), generator=torch.Generator().manual_seed(99),
                         device=torch.device("cpu"))
    assert torch.equal(got, expected)
    assert not torch.equal(torch.rand(3, 4), expected)            # restored afterwards


def test_rel_diff_and_tolerance():
    from dipkd.doctor.core import CheckFailed, rel_diff, require_close
    a = torch.tensor([1.0, 2.0, 4.0])
    assert rel_diff(a, a) == 0.0
    assert rel_diff(a + torch.tensor([0.0, 0.0, 0.004]), a) == pytest.approx(1e-3, rel=1e-4)
    assert rel_diff(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")
    assert require_close({"x": 1e-6, "y": 2e-5}, 1e-4, "w") == 2e-5
    with pytest.raises(CheckFailed, match="y differs by 2.00e-03"):
        require_close({"x": 1e-6, "y": 2e-3}, 1e-4, "w")


def test_cli_has_the_doctor_and_bad_input_is_exit_code_2(tmp_path, params):
    from dipkd.cli import build_parser, main
    args = build_parser().parse_args(["doctor", "--device", "cpu", "--checks", "data"])
    assert args.handler.__name__ == "_doctor" and args.out == "reports/doctor.md"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = str(tmp_path / "d.md")
    for bad in (["--profile", "nope"], ["--device", "tpu"], ["--checks", "everything"]):
        assert main(["doctor", "--params", str(path), "--out", out, *bad]) == 2
