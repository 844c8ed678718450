"""RunSpec is the one source of the run paths: every training stage of dvc.yaml (as DVC
resolves it from params.yaml) declares exactly the paths RunSpec gives the run its command
names; the stage script's arguments name the run as pipeline._cli.run_of reads them."""
import argparse
import shlex
from pathlib import Path

import pytest

from dipkd.config.params import dataset_spec, load_params, run_spec
from pipeline._cli import RUN_ARGS, parser, run_of

REPO = Path(__file__).resolve().parents[1]


def _parser():
    """pipeline.train's parser, raising instead of exiting on bad input."""
    out = parser("", *RUN_ARGS)
    out.exit_on_error = False
    return out


def _run_args(cmd: str):
    """The stage command's arguments as the stage script parses them."""
    words = shlex.split(cmd)
    return _parser().parse_args(words[words.index("-m") + 2:])


@pytest.fixture(scope="module")
def stages():
    from dvc.repo import Repo
    with Repo(str(REPO)) as repo:
        return [(s.addressing, s.cmd, {str(o.def_path): o for o in s.outs},
                 [str(d.def_path) for d in s.deps]) for s in repo.index.stages]


def test_every_run_stage_declares_runspecs_paths(stages):
    params = load_params(REPO / "params.yaml")
    checked = 0
    for name, cmd, outs, deps in stages:
        if " pipeline.train " not in cmd:
            continue
        args = _run_args(cmd)
        spec = run_of(params, args)
        expected = {str(spec.model_path), str(spec.model_path.with_suffix(".py")),
                    str(spec.curves_path), str(spec.metrics_path), str(spec.detections_path)}
        assert set(outs) == expected, name
        assert outs[str(spec.curves_path)].plot, name
        assert outs[str(spec.metrics_path)].metric, name
        if spec.role == "distilled":
            teacher = run_spec(params, "teacher", spec.dataset.name, spec.detector)
            assert str(teacher.model_path) in deps, name
        else:
            assert not [d for d in deps if d.startswith("models/")], name
        checked += 1
    assert checked >= 18      # the default matrix: 18 training runs and more


def test_every_prepare_stage_declares_dataset_specs_paths(stages):
    """prepare@<ds> declares DatasetSpec's layout (with the whole summary in it) and its
    metrics file (the summary's numbers), the paths pipeline.prepare_data writes."""
    params = load_params(REPO / "params.yaml")
    prepares = [(name, outs) for name, _, outs, _ in stages if name.startswith("prepare@")]
    assert prepares
    for name, outs in prepares:
        spec = dataset_spec(params, name.split("@", 1)[1])
        assert set(outs) == {str(spec.root), str(spec.metrics_path)}, name
        assert outs[str(spec.metrics_path)].metric and not outs[str(spec.root)].metric, name


def test_run_arguments_are_checked(params):
    parse = _parser().parse_args
    student = run_of(params, parse(["--role", "student", "--dataset", "ssdd",
                                    "--detector", "retinanet"]))
    assert student.role == "student" and not student.variant
    distilled = run_of(params, parse(["--role", "distilled", "--dataset", "ssdd",
                                      "--detector", "retinanet", "--set", "tau=0.75"]))
    assert distilled.method == "dipkd" and distilled.variant == "tau0.75"
    with pytest.raises(ValueError, match="--method, --modules and --set are for --role "
                                         "distilled, not --role teacher"):
        run_of(params, parse(["--role", "teacher", "--method", "fgd", "--dataset", "ssdd",
                              "--detector", "retinanet"]))
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'distiled'"):
        parse(["--role", "distiled", "--dataset", "ssdd", "--detector", "retinanet"])
