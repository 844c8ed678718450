"""DVC's analytics (a report sent over the network after every `dvc` command) are off: in the
repository's .dvc/config (so in every copy of it a test or a user runs `dvc` in), and in the
tests' environment (tests/conftest.py), which also covers repositories made by `dvc init`."""
import os
import subprocess
import sys
from pathlib import Path

from dvc.config import Config, to_bool

REPO = Path(__file__).resolve().parents[1]
IS_ENABLED = "from dvc.analytics import is_enabled; print(is_enabled())"


def test_the_repository_config_turns_analytics_off():
    repo_level = Config(dvc_dir=str(REPO / ".dvc"), validate=False).read("repo")
    assert to_bool(repo_level["core"].get("analytics", "true")) is False


def test_the_repository_config_alone_is_enough(tmp_path):
    """Without the tests' environment variable, `dvc` in the repository still sends nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_NO_ANALYTICS", "DVC_TEST")}
    out = subprocess.run([sys.executable, "-c", IS_ENABLED], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_fresh_dvc_init_repository_sends_no_analytics(tmp_path):
    """A test's own `git init` + `dvc init` repository has DVC's default config (analytics
    on): the environment the tests run `dvc` in turns them off."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    assert "analytics" not in (tmp_path / ".dvc" / "config").read_text()
    out = subprocess.run([sys.executable, "-c", IS_ENABLED], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
