import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


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
