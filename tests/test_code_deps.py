"""Stage code dependencies derived from imports (dipkd/code_deps.py, stage `code`)."""
import hashlib
import json
import re
from pathlib import Path

import yaml

from dipkd.code_deps import manifest, manifest_path, stage_modules, write_manifests

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_manifest_follows_every_kind_of_import(tmp_path):
    _tree(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/_cli.py": "from dipkd.config import params\n",
        "pipeline/stage.py": ("from pipeline._cli import run\n"
                              "def main():\n    from dipkd.kd import sns  # lazy\n"),
        "dipkd/__init__.py": "",
        "dipkd/config/__init__.py": "from .params import load\n",
        "dipkd/config/params.py": "import yaml\nload = 1\n",
        "dipkd/kd/__init__.py": "",
        "dipkd/kd/sns.py": "from ..reports.common import fmt\nfrom . import wavelet\n",
        "dipkd/kd/wavelet.py": "import numpy\n",
        "dipkd/kd/unused.py": "",
        "dipkd/reports/__init__.py": "",
        "dipkd/reports/common.py": "fmt = str\n",
        "dipkd/reports/paper_values.yaml": "a: 1\n",
        "dipkd/other.py": "import dipkd.kd.unused\n",
    })
    got = manifest(tmp_path, "pipeline.stage")
    assert sorted(got) == [
        "dipkd/__init__.py", "dipkd/config/__init__.py", "dipkd/config/params.py",
        "dipkd/kd/__init__.py", "dipkd/kd/sns.py", "dipkd/kd/wavelet.py",
        "dipkd/reports/__init__.py", "dipkd/reports/common.py",
        "dipkd/reports/paper_values.yaml",          # data beside an imported module
        "pipeline/__init__.py", "pipeline/_cli.py", "pipeline/stage.py"]
    assert got["dipkd/kd/sns.py"] == hashlib.md5((tmp_path / "dipkd/kd/sns.py")
                                                 .read_bytes()).hexdigest()


def test_a_plugin_folder_counts_every_module_in_it(tmp_path):
    """A package whose __init__ calls import_submodules(__name__) (dipkd/plugins.py) runs
    every module in its folder: each is in the manifest, `_private` ones and other folders'
    modules are not (unless imported)."""
    _tree(tmp_path, {
        "pipeline/__init__.py": "", "pipeline/stage.py": "import dipkd.methods\n",
        "dipkd/__init__.py": "",
        "dipkd/methods/__init__.py": ("from ..plugins import import_submodules\n"
                                      "MODULES = import_submodules(__name__)\n"),
        "dipkd/methods/a.py": "", "dipkd/methods/b.py": "from ..helper import x\n",
        "dipkd/methods/_draft.py": "", "dipkd/helper.py": "x = 1\n",
        "dipkd/plugins.py": "", "dipkd/other/__init__.py": "",
        "dipkd/other/c.py": "import_submodules = None\n",
    })
    assert sorted(manifest(tmp_path, "pipeline.stage")) == [
        "dipkd/__init__.py", "dipkd/helper.py", "dipkd/methods/__init__.py",
        "dipkd/methods/a.py", "dipkd/methods/b.py", "dipkd/plugins.py",
        "pipeline/__init__.py", "pipeline/stage.py"]


def test_manifests_are_rewritten_only_where_code_changed(tmp_path):
    _tree(tmp_path, {"pipeline/__init__.py": "", "pipeline/a.py": "import dipkd.x\n",
                     "pipeline/b.py": "", "dipkd/__init__.py": "", "dipkd/x.py": ""})
    write_manifests(tmp_path)
    before = {m: (tmp_path / manifest_path(m)).read_text() for m in stage_modules(tmp_path)}
    (tmp_path / "dipkd/x.py").write_text("y = 1\n")
    write_manifests(tmp_path)
    after = {m: (tmp_path / manifest_path(m)).read_text() for m in stage_modules(tmp_path)}
    assert before["pipeline.b"] == after["pipeline.b"]
    assert before["pipeline.a"] != after["pipeline.a"]
    assert json.loads(after["pipeline.a"])["dipkd/x.py"] == hashlib.md5(b"y = 1\n").hexdigest()


def test_every_stage_depends_on_its_scripts_manifest_and_lists_no_source():
    """One place for the code dependencies: each `python -m pipeline.<name>` stage depends on
    runs/code/pipeline.<name>.json, and only the `code` stage names source paths."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["deps"] == ["dipkd", "pipeline"]
    for name, stage in stages.items():
        if name == "code":
            continue
        body = stage.get("do", stage)
        module = re.search(r"python -m (pipeline\.\w+)", body["cmd"]).group(1)
        deps = [str(d) for d in body["deps"]]
        assert str(manifest_path(module)) in deps, name
        assert module in stage_modules(REPO), name
        assert not [d for d in deps if d.startswith(("dipkd", "pipeline"))], (name, deps)


def test_training_manifests_hold_what_the_old_lists_missed():
    """The drift the hand lists had: training imports dipkd/launch.py, dipkd/tracking/ and
    dipkd/evaluation/metric.py; the test after training (evaluation/run.py) and the config
    builder."""
    train = set(manifest(REPO, "pipeline.train"))
    assert {"dipkd/launch.py", "dipkd/tracking/mlflow_runs.py", "dipkd/evaluation/metric.py",
            "dipkd/evaluation/run.py", "dipkd/training.py", "pipeline/train.py"} <= train
    assert "dipkd/reports/tables/table1.py" not in train and "dipkd/inference/infer.py" not in train
    assert "dipkd/mmdet_config.py" in manifest(REPO, "pipeline.evaluate")   # no stage's
    assert "dipkd/reports/paper_values.yaml" in manifest(REPO, "pipeline.make_tables")
