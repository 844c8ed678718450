"""How ``scripts/setup.sh`` builds mmcv on this machine: CPU ops, or CUDA ops for which GPUs
with which CUDA compiler. Standard library only; the decision is unit-tested with fake
``nvidia-smi`` and ``nvcc`` programs on PATH (tests/test_cuda_setup.py).

The rules:

- no GPU (``nvidia-smi -L`` missing or failing, or listing none): CPU ops (``ACCEL=cpu``);
- a GPU, but torch is a CPU build (``torch.version.cuda`` is None): stop, one line saying to
  install a CUDA build of torch;
- a GPU and an ``nvcc`` (``$CUDA_HOME/bin/nvcc``, else on PATH) of torch's CUDA major
  version: build with it (torch's extension builder refuses a major mismatch);
- a GPU and no ``nvcc``, or one of another major version: install NVIDIA's CUDA compiler
  packages of torch's CUDA ``major.minor`` from the package registry into the venv
  (``nvidia-cuda-nvcc`` + runtime headers + CCCL; ``-cu12`` names for CUDA 12) and use them
  as ``CUDA_HOME``; for a CUDA version without such packages (< 12), stop with one line
  naming the toolkit to install;
- target architectures: ``TORCH_CUDA_ARCH_LIST`` if set, else the compute capabilities of
  the visible GPUs (``nvidia-smi --query-gpu=compute_cap``);
- the mmcv wheel cache key and the setup stamp contain the accelerator (``cpu``, ``cu130``)
  and the architectures, so a wheel built for other GPUs is never reused and installing
  CUDA later rebuilds.

Usage (prints ``KEY=value`` lines for the shell):

    python scripts/cuda_plan.py --torch-cuda 13.0            # the plan
    python scripts/cuda_plan.py --signature                  # what the setup stamp hashes
    python scripts/cuda_plan.py --cuda-home-from-packages     # CUDA_HOME of installed packages
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def gpu_capabilities() -> list[str]:
    """Compute capabilities (``"8.6"``) of the visible GPUs, [] without a usable GPU."""
    if shutil.which("nvidia-smi") is None or not (_run(["nvidia-smi", "-L"]) or "").strip():
        return []
    out = _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]) or ""
    caps = [line.strip() for line in out.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "all"):
        keep = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        caps = [c for i, c in enumerate(caps) if i in keep]
    return caps


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.access(Path(home) / "bin" / "nvcc", os.X_OK):
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_release(nvcc: str | None) -> str | None:
    """``"12.4"`` from ``nvcc --version`` (``Cuda compilation tools, release 12.4, ...``)."""
    if nvcc is None:
        return None
    m = re.search(r"release (\d+)\.(\d+)", _run([nvcc, "--version"]) or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def compiler_packages(torch_cuda: str) -> list[str] | None:
    """NVIDIA's pip packages of the CUDA compiler and headers for ``torch_cuda``
    (``major.minor``), None where the registry has none (CUDA < 12)."""
    major, minor = (int(x) for x in torch_cuda.split(".")[:2])
    if major < 12:
        return None
    suffix = "-cu12" if major == 12 else ""
    return [f"nvidia-cuda-{part}{suffix}=={major}.{minor}.*"
            for part in ("nvcc", "runtime", "cccl")]


def accel_name(torch_cuda: str | None) -> str:
    return "cpu" if not torch_cuda else "cu" + "".join(torch_cuda.split(".")[:2])


def arch_list(caps: list[str]) -> str:
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    return ";".join(sorted(set(caps), key=lambda c: tuple(int(x) for x in c.split("."))))


def plan(caps: list[str], torch_cuda: str | None, nvcc: str | None) -> dict:
    """The decision (see the module docstring) as a dict of strings."""
    if not caps:
        return {"ACTION": "cpu", "ACCEL": "cpu", "ARCH": "",
                "MESSAGE": "no NVIDIA GPU visible: mmcv with CPU ops"}
    if not torch_cuda:
        return {"ACTION": "error", "ACCEL": "cpu", "ARCH": "",
                "MESSAGE": f"{len(caps)} GPU(s) visible but the installed torch is a CPU build: "
                           "install a CUDA build of torch (pip install torch==<version> from "
                           "the PyTorch CUDA index) and run setup again"}
    accel, arch = accel_name(torch_cuda), arch_list(caps)
    have = nvcc_release(nvcc)
    torch_major = torch_cuda.split(".")[0]
    if have is not None and have.split(".")[0] == torch_major:
        return {"ACTION": "build", "ACCEL": accel, "ARCH": arch, "NVCC": nvcc,
                "MESSAGE": f"GPU(s) sm {arch}: building mmcv's CUDA ops with nvcc {have} "
                           f"(torch CUDA {torch_cuda})"}
    why = (f"nvcc {have} does not match torch's CUDA {torch_cuda}" if have
           else "no nvcc (CUDA compiler) found")
    packages = compiler_packages(torch_cuda)
    if packages is None:
        return {"ACTION": "error", "ACCEL": accel, "ARCH": arch,
                "MESSAGE": f"{why}: install the CUDA {torch_cuda} toolkit (nvcc) and set "
                           "CUDA_HOME, then run setup again"}
    return {"ACTION": "install-nvcc", "ACCEL": accel, "ARCH": arch,
            "PACKAGES": " ".join(packages),
            "MESSAGE": f"{why}: installing NVIDIA's CUDA {torch_cuda} compiler packages "
                       f"into the venv ({', '.join(packages)})"}


def cuda_home_from_packages(site_packages: Path) -> str | None:
    """The CUDA_HOME of NVIDIA's pip packages in ``site_packages``: ``nvidia/cu13`` (CUDA 13
    packages share one prefix), or for CUDA 12 a directory of symlinks merging
    ``nvidia/cuda_{nvcc,runtime,cccl}`` (each package has its own prefix)."""
    nvidia = Path(site_packages) / "nvidia"
    for prefix in sorted(nvidia.glob("cu[0-9]*"), reverse=True):
        if (prefix / "bin" / "nvcc").is_file():
            return str(prefix)
    parts = [nvidia / f"cuda_{p}" for p in ("nvcc", "runtime", "cccl")]
    if not (parts[0] / "bin" / "nvcc").is_file():
        return None
    farm = nvidia / "cuda_home"
    for part in parts:
        for path in part.rglob("*"):
            if path.is_file():
                link = farm / path.relative_to(part)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(path)
    return str(farm)


def signature() -> str:
    """What decides the build: the GPUs' capabilities, nvcc's release, the arch override."""
    caps = gpu_capabilities()
    return f"gpus={','.join(caps)};nvcc={nvcc_release(find_nvcc())};" \
           f"arch={os.environ.get('TORCH_CUDA_ARCH_LIST', '')}"


def wheel_key(mmcv: str, torch: str, accel: str, arch: str, py: str) -> str:
    """The mmcv wheel cache key: ``mmcv-2.1.0_torch-2.14.1_cu130-sm8.0+8.6_cp311``."""
    target = accel if accel == "cpu" else f"{accel}-sm{arch.replace(';', '+').replace(' ', '+')}"
    return f"mmcv-{mmcv}_torch-{torch}_{target}_{py}"


def _print(values: dict) -> None:
    for key, value in values.items():
        print(f"{key}={shlex.quote(str(value))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-cuda", default="", help="torch.version.cuda ('' = CPU build)")
    parser.add_argument("--signature", action="store_true")
    parser.add_argument("--cuda-home-from-packages", metavar="SITE_PACKAGES")
    parser.add_argument("--wheel-key", nargs=5, metavar=("MMCV", "TORCH", "ACCEL", "ARCH", "PY"))
    args = parser.parse_args(argv)
    if args.signature:
        print(signature())
    elif args.cuda_home_from_packages:
        home = cuda_home_from_packages(Path(args.cuda_home_from_packages))
        if home is None:
            print("error: no nvcc in the installed NVIDIA packages", file=sys.stderr)
            return 1
        print(home)
    elif args.wheel_key:
        print(wheel_key(*args.wheel_key))
    else:
        _print(plan(gpu_capabilities(), args.torch_cuda or None, find_nvcc()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
