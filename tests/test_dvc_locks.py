"""DVC lock files left by killed processes (dipkd/dvc_locks.py)."""
import json
import subprocess

import pytest

from dipkd.dvc_locks import clear_stale_locks, clear_torn_rwlock


@pytest.fixture
def dvc_repo(tmp_path):
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    return tmp_path


def _repro(root):
    return subprocess.run(["dvc", "repro", "hello"], cwd=root, capture_output=True, text=True)


@pytest.mark.parametrize("torn", ["", '{"read": {"a": [{"pid": 1'])
def test_a_torn_rwlock_stops_dvc_and_is_removed(dvc_repo, torn):
    (dvc_repo / ".dvc" / "tmp").mkdir(exist_ok=True)
    (dvc_repo / ".dvc" / "tmp" / "rwlock").write_text(torn)
    failed = _repro(dvc_repo)
    assert failed.returncode != 0 and "RWLock" in failed.stderr + failed.stdout
    assert clear_torn_rwlock(dvc_repo) is True
    assert not (dvc_repo / ".dvc" / "tmp" / "rwlock").exists()
    assert _repro(dvc_repo).returncode == 0
    assert (dvc_repo / "out.txt").read_text() == "hi\n"


def test_a_valid_rwlock_is_kept(dvc_repo):
    assert _repro(dvc_repo).returncode == 0           # DVC writes a valid one
    path = dvc_repo / ".dvc" / "tmp" / "rwlock"
    before = path.read_text()
    json.loads(before)
    assert clear_torn_rwlock(dvc_repo) is False and path.read_text() == before


def test_no_rwlock_is_nothing_to_do(tmp_path):
    assert clear_torn_rwlock(tmp_path) is False


def test_a_private_copy_loses_every_lock_file(tmp_path):
    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    for name in ("lock", "rwlock", "rwlock.lock", "btime"):
        (tmp / name).write_text("x")
    assert clear_stale_locks(tmp_path) == ["lock", "rwlock", "rwlock.lock"]
    assert sorted(p.name for p in tmp.iterdir()) == ["btime"]
