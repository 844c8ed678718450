"""The GPU decisions of scripts/setup.sh (scripts/cuda_plan.py), with fake ``nvidia-smi`` and
``nvcc`` programs on PATH: no GPU, GPU with a matching nvcc, GPU without nvcc, GPU with a
mismatched nvcc, a CPU build of torch on a GPU machine, and a cached wheel for another GPU
architecture."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "scripts" / "cuda_plan.py"


def _fake(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def _smi(bin_dir, caps):
    lines = "\n".join(f"GPU {i}: NVIDIA Fake (UUID: GPU-{i})" for i in range(len(caps)))
    _fake(bin_dir, "nvidia-smi", f"""case "$*" in
  -L) printf '{lines}\\n' ;;
  *compute_cap*) printf '{chr(10).join(caps)}\\n' ;;
  *) exit 1 ;;
esac
""")


def _nvcc(bin_dir, release):
    _fake(bin_dir, "nvcc", f"""echo "nvcc: NVIDIA (R) Cuda compiler driver"
echo "Cuda compilation tools, release {release}, V{release}.1"
""")


def _plan(tmp_path, torch_cuda="13.0", **env_extra):
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **env_extra}
    out = subprocess.run([sys.executable, str(PLAN), "--torch-cuda", torch_cuda], env=env,
                         capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in shlex.split(out.stdout.replace("\n", " ")))


@pytest.fixture
def bin_dir(tmp_path):
    (tmp_path / "bin").mkdir()
    return tmp_path / "bin"


def test_no_gpu_builds_cpu_ops(tmp_path, bin_dir):
    _nvcc(bin_dir, "13.0")   # a toolkit without a GPU changes nothing
    plan = _plan(tmp_path)
    assert plan["ACTION"] == "cpu" and plan["ACCEL"] == "cpu" and plan["ARCH"] == ""
    _fake(bin_dir, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")  # driver broken
    assert _plan(tmp_path)["ACTION"] == "cpu"


def test_gpu_with_matching_nvcc_builds_for_the_visible_architectures(tmp_path, bin_dir):
    _smi(bin_dir, ["8.6", "8.0", "8.6"])
    _nvcc(bin_dir, "13.1")   # same major as torch's 13.0: torch's builder accepts it
    plan = _plan(tmp_path)
    assert plan["ACTION"] == "build" and plan["ACCEL"] == "cu130"
    assert plan["ARCH"] == "8.0;8.6" and plan["NVCC"] == str(bin_dir / "nvcc")
    assert _plan(tmp_path, TORCH_CUDA_ARCH_LIST="9.0")["ARCH"] == "9.0"   # the user's choice
    assert _plan(tmp_path, CUDA_VISIBLE_DEVICES="1")["ARCH"] == "8.0"     # visible GPUs only


def test_gpu_without_nvcc_installs_the_matching_compiler_packages(tmp_path, bin_dir):
    _smi(bin_dir, ["8.9"])
    plan = _plan(tmp_path)
    assert plan["ACTION"] == "install-nvcc" and "no nvcc" in plan["MESSAGE"]
    assert plan["PACKAGES"].split() == ["nvidia-cuda-nvcc==13.0.*", "nvidia-cuda-runtime==13.0.*",
                                        "nvidia-cuda-cccl==13.0.*"]
    cu12 = _plan(tmp_path, torch_cuda="12.8")
    assert cu12["PACKAGES"].split()[0] == "nvidia-cuda-nvcc-cu12==12.8.*"
    old = _plan(tmp_path, torch_cuda="11.8")    # no registry packages: one clear line
    assert old["ACTION"] == "error" and "install the CUDA 11.8 toolkit" in old["MESSAGE"]


def test_gpu_with_mismatched_nvcc_does_not_build_with_it(tmp_path, bin_dir):
    _smi(bin_dir, ["8.0"])
    _nvcc(bin_dir, "12.4")
    plan = _plan(tmp_path)
    assert plan["ACTION"] == "install-nvcc"
    assert "nvcc 12.4 does not match torch's CUDA 13.0" in plan["MESSAGE"]
    # CUDA_HOME's nvcc wins over the one on PATH
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    _nvcc(home / "bin", "13.0")
    assert _plan(tmp_path, CUDA_HOME=str(home))["ACTION"] == "build"


def test_cpu_torch_on_a_gpu_machine_stops_with_one_line(tmp_path, bin_dir):
    _smi(bin_dir, ["8.0"])
    plan = _plan(tmp_path, torch_cuda="")
    assert plan["ACTION"] == "error" and "CPU build" in plan["MESSAGE"]
    assert "\n" not in plan["MESSAGE"]


def test_wheel_cache_key_separates_accelerators_and_architectures(tmp_path):
    def key(accel, arch):
        out = subprocess.run([sys.executable, str(PLAN), "--wheel-key", "2.1.0", "2.14.1",
                              accel, arch, "cp311"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    cpu = key("cpu", "")
    assert cpu == "mmcv-2.1.0_torch-2.14.1_cpu_cp311"   # the CPU key of earlier setups
    a100, rtx = key("cu130", "8.0"), key("cu130", "8.6")
    assert a100 == "mmcv-2.1.0_torch-2.14.1_cu130-sm8.0_cp311" and len({cpu, a100, rtx}) == 3
    # setup.sh looks for a wheel only under its own key: one built for sm 8.0 is not reused
    cache = tmp_path / "wheels"
    (cache / a100).mkdir(parents=True)
    (cache / a100 / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert not list((cache / rtx).glob("mmcv-*.whl"))


def test_setup_stamp_changes_when_a_gpu_or_nvcc_appears(tmp_path, bin_dir):
    def signature():
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        return subprocess.run([sys.executable, str(PLAN), "--signature"], env=env,
                              capture_output=True, text=True, check=True).stdout
    none = signature()
    _smi(bin_dir, ["8.0"])
    gpu = signature()
    _nvcc(bin_dir, "13.0")
    assert len({none, gpu, signature()}) == 3
    assert "--signature" in (REPO / "scripts" / "setup.sh").read_text()


def test_cuda_home_of_the_installed_packages(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import cuda_plan
    finally:
        sys.path.pop(0)
    site = tmp_path / "site"
    assert cuda_plan.cuda_home_from_packages(site) is None
    # CUDA 12: one prefix per package, merged by symlinks
    for part, rel in (("nvcc", "bin/nvcc"), ("runtime", "include/cuda_runtime.h"),
                      ("cccl", "include/thrust/version.h")):
        f = site / "nvidia" / f"cuda_{part}" / rel
        f.parent.mkdir(parents=True)
        f.write_text("x")
    home = Path(cuda_plan.cuda_home_from_packages(site))
    assert (home / "bin/nvcc").is_file() and (home / "include/cuda_runtime.h").is_file()
    assert (home / "include/thrust/version.h").is_symlink()
    # CUDA 13: one shared prefix
    (site / "nvidia/cu13/bin").mkdir(parents=True)
    (site / "nvidia/cu13/bin/nvcc").write_text("x")
    assert cuda_plan.cuda_home_from_packages(site) == str(site / "nvidia/cu13")
    assert os.path.basename(cuda_plan.__file__) == "cuda_plan.py"
