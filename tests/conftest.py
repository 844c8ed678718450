import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# No DVC analytics report (a network call) from any `dvc` the tests run: the repository's
# .dvc/config turns them off for copies of it, this also for repositories made by `dvc init`.
os.environ["DVC_NO_ANALYTICS"] = "1"


@pytest.fixture
def params():
    """A fresh copy of the repository's params.yaml."""
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


@pytest.fixture
def write_params(tmp_path):
    def _write(p, name="params.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(p))
        return path
    return _write


@pytest.fixture(autouse=True)
def _restore_environment():
    """Give every test the environment it started with. ``mlflow.set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI`` into ``os.environ``, so a test that opens a run in-process would
    otherwise send every later test's stage subprocesses into its temporary store."""
    import os
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
    mlflow = __import__("sys").modules.get("mlflow")
    if mlflow is not None and "MLFLOW_TRACKING_URI" not in before:
        from mlflow.tracking import _tracking_service
        _tracking_service.utils._tracking_uri = None    # the in-process default, too
