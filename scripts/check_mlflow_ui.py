"""Check in a real headless browser what a user sees in ``mlflow ui`` (issue: MLflow 3 opens an
untagged experiment on its GenAI overview page instead of the runs table).

Starts ``mlflow server`` on a free local port over a store (default: a fresh demo store filled
the way the pipeline fills it: :func:`dipkd.tracking.ensure_experiment`, ``open_run`` with the
dataset input, losses per step and validation mAP per epoch; or ``--store mlflow.db`` for the
project's own runs), renders pages with Debian's ``chromium --headless`` (``--dump-dom``
after the single-page app has run, and a screenshot), and checks:

- the experiment page (opened with ``?workflowType=machine_learning``: MLflow 3.17 ignores the
  experiment's ``mlflow.experimentKind`` tag and follows its global GenAI / Model training
  switch, default GenAI) is the runs table, not the GenAI "Overview" with "Traces", lists the
  runs by name, and its Dataset column shows the dataset;
- a run page shows the run's tags and params and its metrics, and the model-metrics page
  draws the curves of ``loss`` and ``coco/mAP``.

Screenshots go to ``--out`` (default ``/tmp/dipkd-mlflow-ui``), never into the repository.
Exit code 0 if every check passed, 1 otherwise (each failed check printed), 2 if chromium or
the server is missing.

    python scripts/check_mlflow_ui.py [--store mlflow.db] [--experiment dipkd-repro/study]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# MLflow 3.17's UI takes the experiment's kind from its global GenAI / Model training switch
# (the `workflowType` URL parameter, else the browser's last choice, default GenAI) and no
# longer from the experiment's `mlflow.experimentKind` tag: links into our experiments carry
# this parameter (`make mlflow-ui` prints one).
ML = "?workflowType=machine_learning"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_store(root: Path) -> tuple[str, str]:
    """A store at ``root`` with one experiment and two runs logged as the pipeline logs them;
    returns (experiment name, one run id)."""
    os.environ["DIPKD_STORE_ROOT"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    sys.path.insert(0, str(REPO))
    import mlflow

    from dipkd.config.params import load_params, run_spec
    from dipkd.tracking.mlflow_runs import open_run

    params = load_params(REPO / "params.yaml")
    run_id = None
    for role in ("teacher", "student"):
        spec = run_spec(params, role, "ssdd", "faster_rcnn")
        open_run(spec, root / f"{role}.json", run_name=f"{spec.group}/{spec.run_key}",
                 data_digest="0123456789abcdef" * 4)
        for step in range(20):
            mlflow.log_metric("loss", 2.0 / (step + 1), step=step)
        for epoch in range(1, 5):
            mlflow.log_metric("coco/mAP", 0.1 * epoch, step=epoch)
        run_id = run_id or mlflow.active_run().info.run_id
        mlflow.end_run()
    return spec.experiment, run_id


def render(chromium: str, url: str, shot: Path, budget_ms: int = 25000) -> str:
    """The DOM of ``url`` after the app ran ``budget_ms`` of virtual time (and a screenshot)."""
    common = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1600,1000",
              f"--virtual-time-budget={budget_ms}"]
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    out = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180)
    return out.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="an mlflow.db to show (default: a fresh demo store)")
    parser.add_argument("--experiment", help="experiment name (with --store)")
    parser.add_argument("--out", default="/tmp/dipkd-mlflow-ui", help="screenshots")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dipkd-ui-"))
    if args.store:
        db = Path(args.store).resolve()
        experiment = args.experiment or "dipkd-repro/smoke"
    else:
        experiment, _ = demo_store(tmp)
        db = tmp / "mlflow.db"
    import mlflow
    client = mlflow.tracking.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        print(f"error: no experiment {experiment!r} in {db}", file=sys.stderr)
        return 2
    runs = client.search_runs([exp.experiment_id], max_results=50)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{db}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = []

    def check(ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            print("error: mlflow server did not start", file=sys.stderr)
            return 2
        page = render(chromium, f"{base}/#/experiments/{exp.experiment_id}{ML}",
                      out / "experiment.png")
        check("Traces" not in page or "Run Name" in page,
              f"with {ML} the experiment opens on the runs table, not the GenAI overview")
        names = [r.info.run_name for r in runs[:5]]
        check(all(n in page for n in names), f"the runs are listed by name ({names})")
        datasets = {i.dataset.name for r in runs for i in r.inputs.dataset_inputs}
        check(bool(datasets) and all(d in page for d in datasets),
              f"the Dataset column shows {sorted(datasets)}")
        run = runs[0]
        page = render(chromium, f"{base}/#/experiments/{exp.experiment_id}/runs/"
                      f"{run.info.run_id}{ML}", out / "run.png")
        tags = {k: v for k, v in run.data.tags.items() if k in ("role", "dataset", "detector")}
        check(all(v in page for v in tags.values()) and "schedule.epochs" in page,
              f"the run page shows its tags {tags} and params")
        metrics = [m for m in ("loss", "coco/mAP") if m in run.data.metrics]

        def drawn(page: str) -> bool:
            # charts are grouped by prefix: coco/mAP is the chart "mAP" in the group "coco";
            # plotly draws each chart as an <svg class="main-svg">
            return bool(metrics) and all(m.split("/")[-1] in page for m in metrics) \
                and page.count("main-svg") >= len(metrics)
        for attempt in range(3):   # the charts load lazily: a busy machine needs longer
            page = render(chromium, f"{base}/#/experiments/{exp.experiment_id}/runs/"
                          f"{run.info.run_id}/model-metrics{ML}", out / "metrics.png",
                          budget_ms=60000 * (attempt + 1))
            if drawn(page):
                break
        check(drawn(page),
              f"the run's metrics page draws the curves of {metrics}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshots in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
