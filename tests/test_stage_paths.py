"""RunSpec is the one source of the run paths: every training and evaluation stage of
dvc.yaml (as DVC resolves it from params.yaml) declares exactly the paths RunSpec gives the
run its command names."""
import shlex
from pathlib import Path

import pytest
import yaml

from dipkd.config.params import distill_spec, run_spec

REPO = Path(__file__).resolve().parents[1]
TRAINING = {"pipeline.train_teacher": "teacher", "pipeline.train_student": "student",
            "pipeline.distill": "distilled"}


def _args(cmd: str) -> tuple[str, dict]:
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    args, key = {"set": []}, None
    for word in words[words.index("-m") + 2:]:
        if word.startswith("--"):
            key = word[2:]
        elif key == "set":
            args["set"].append(word)
        else:
            args[key] = word
    return module, args


def _spec(params, module, args):
    seed = int(args["seed"]) if "seed" in args else None
    role = TRAINING.get(module) or args["role"]
    if role != "distilled":
        return run_spec(params, role, args["dataset"], args["detector"], seed)
    overrides = dict(item.split("=", 1) for item in args["set"])
    if "modules" in args:
        from dipkd.config.params import parse_modules
        overrides = {**parse_modules(args["modules"]), **overrides}
    return distill_spec(params, args.get("method", "dipkd"), args["dataset"],
                        args["detector"], seed, overrides)


@pytest.fixture(scope="module")
def stages():
    from dvc.repo import Repo
    with Repo(str(REPO)) as repo:
        return [(s.addressing, s.cmd, {str(o.def_path): o for o in s.outs},
                 [str(d.def_path) for d in s.deps]) for s in repo.index.stages]


def test_every_run_stage_declares_runspecs_paths(stages):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    checked = 0
    for name, cmd, outs, deps in stages:
        module, args = _args(cmd)
        if module in TRAINING:
            spec = _spec(params, module, args)
            expected = {str(spec.model_path), str(spec.model_path.with_suffix(".py")),
                        str(spec.curves_path)}
            assert set(outs) == expected, name
            assert outs[str(spec.curves_path)].plot, name
            if spec.role == "distilled":
                teacher = run_spec(params, "teacher", spec.dataset.name, spec.detector)
                assert str(teacher.model_path) in deps, name
        elif module == "pipeline.evaluate":
            spec = _spec(params, module, args)
            assert set(outs) == {str(spec.metrics_path), str(spec.detections_path)}, name
            assert outs[str(spec.metrics_path)].metric, name
            assert str(spec.model_path) in deps, name
        else:
            continue
        checked += 1
    assert checked >= 40      # the default matrix: 18 trainings + 22 evaluations and more
