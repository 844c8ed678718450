"""A one-node SLURM cluster for the tests, real daemons in a temporary folder.

Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get when missing; the tests are
skipped, saying why, only where that is impossible) run as root: ``munged`` with its own key
and socket, then ``slurmctld`` and ``slurmd`` in the foreground with a generated
``slurm.conf``: one node named after ``hostname -s`` with ``CPUs=2``,
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, free ports, state, spool and
logs in the folder; finished jobs stay visible to ``squeue``/``scontrol`` for an hour
(``MinJobAge``), since there is no accounting database. Clients find it through
``SLURM_CONF`` (:attr:`Cluster.env`).

:meth:`Cluster.stop` cancels the cluster's jobs and stops exactly the three daemons it
started (by their process objects), nothing else.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
PACKAGES = ("slurm-wlm", "munge")


class Unavailable(Exception):
    """No SLURM can run here (the reason, for pytest.skip)."""


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get if a tool is missing."""
    if all(shutil.which(t) for t in TOOLS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable("slurm-wlm/munge are not installed and apt-get cannot install them "
                          "here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Unavailable("apt-get install slurm-wlm munge failed: "
                              + (proc.stderr.strip().splitlines() or ["?"])[-1])
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise Unavailable(f"installed slurm-wlm and munge but {', '.join(missing)} missing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.8)
    return 4096


class Cluster:
    """The cluster's daemons (:meth:`start`, :meth:`stop`) and client environment."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.node = socket.gethostname().split(".")[0]
        self.conf = folder / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}

    def _write_config(self) -> None:
        munge = self.folder / "munge"
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=dipkdtest",
            f"SlurmctldHost={self.node}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge / 'munge.socket'}",
            f"StateSaveLocation={self.folder / 'state'}",
            f"SlurmdSpoolDir={self.folder / 'spool'}",
            f"SlurmctldPidFile={self.folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.folder / 'slurmctld.log'}",
            f"SlurmdLogFile={self.folder / 'slurmd.log'}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=3600",
            "KillWait=5",
            f"NodeName={self.node} CPUs=2 RealMemory={_memory_mb()} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            ""]))
        munge.mkdir(mode=0o755, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        for path in (self.folder, munge):     # munged wants its socket's folders traversable
            path.chmod(0o755)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.folder / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            [name, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, **self.env), start_new_session=True)
        log.close()

    def _wait(self, what: str, check, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join((self.folder / f"{n}.out").read_text(errors="replace")[-800:]
                               for n in self.procs)
                raise RuntimeError(f"SLURM test cluster: {what} did not happen"
                                   f"{' (' + ', '.join(dead) + ' exited)' if dead else ''}"
                                   f":\n{logs}")
            time.sleep(0.2)

    def run(self, *args: str, check: bool = True) -> str:
        """A client command (``squeue``, ``scontrol``, ...) against this cluster."""
        proc = subprocess.run(args, env=dict(os.environ, **self.env), capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()
        return out in ("idle", "mix", "alloc")

    def start(self) -> "Cluster":
        self._write_config()
        munge = self.folder / "munge"
        self._spawn("munged", "-F", f"--socket={munge / 'munge.socket'}",
                    f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}")
        self._wait("munged's socket", (munge / "munge.socket").exists)
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait("the node coming up idle", self._node_idle)
        return self

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop the daemons this object started."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run(
                    "squeue", "-h", "-t", "R,CG", check=False).strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(20)
