"""A real single-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd.

Started from Debian's ``slurm-wlm`` and ``munge`` packages with a generated ``slurm.conf`` in a scratch
directory (no accounting database: job status comes from ``squeue``, kept answerable by a raised
``MinJobAge``). :func:`start_cluster` raises :class:`ClusterUnavailable` with the reason when the
daemons cannot be started (not root, packages missing); :meth:`LocalSlurm.stop` ends exactly the
processes it started, by their process ids.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE = "lhnode"
PARTITION = "debug"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")
# Snakemake's SLURM job step runs `srun` with the SLURM_* variables removed (SLURM_CONF too), so
# srun inside a job only finds the config at its compiled-in default path.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


class ClusterUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalSlurm:
    root: Path
    env: dict
    pids: dict[str, int] = field(default_factory=dict)
    wrote_system_conf: bool = False

    def stop(self) -> None:
        """Stop the daemons this cluster started (slurmd, slurmctld, munged), by pid, and remove
        the system config it wrote."""
        if self.wrote_system_conf:
            SYSTEM_CONF.unlink(missing_ok=True)
            self.wrote_system_conf = False
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, **kw)


def _read_pid(path: Path, timeout: float = 20.0) -> int:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.1)
    raise ClusterUnavailable(f"daemon did not write {path}")


def start_cluster(root: Path, cpus: int | None = None, memory_mb: int = 16000) -> LocalSlurm:
    """Start munged, slurmctld and slurmd for one node of ``cpus`` CPUs under ``root``."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmd needs root")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise ClusterUnavailable(
            f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)"
        )
    if SYSTEM_CONF.exists():
        raise ClusterUnavailable(f"{SYSTEM_CONF} exists (a real cluster's config?); not replacing it")
    cpus = cpus or os.cpu_count() or 1
    root.mkdir(parents=True, exist_ok=True)
    for d in ("state", "spool", "munge", "log"):
        (root / d).mkdir(exist_ok=True)
    cluster = LocalSlurm(root, dict(os.environ))
    try:
        # munge: a fresh key, owned by the munge user when it exists (munged refuses other owners)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = root / "munge" / "munge.socket"
        run_as = []
        try:
            import pwd

            mu = pwd.getpwnam("munge")
            for p in (root / "munge", key):
                os.chown(p, mu.pw_uid, mu.pw_gid)
            run_as = ["runuser", "-u", "munge", "--"]
        except KeyError:
            pass
        os.chmod(root, 0o755)
        subprocess.run(
            [*run_as, "munged", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={root / 'munge' / 'munged.pid'}",
             f"--log-file={root / 'munge' / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}", "--force"],
            check=True, capture_output=True, text=True, timeout=30,
        )
        cluster.pids["munged"] = _read_pid(root / "munge" / "munged.pid")

        conf = root / "slurm.conf"
        node_line = (
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} "
            f"CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN"
        )
        conf.write_text(
            f"""ClusterName=learnedhalting
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
{node_line}
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
        )
        cluster.env["SLURM_CONF"] = str(conf)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(conf, SYSTEM_CONF)
        cluster.wrote_system_conf = True
        subprocess.run(["slurmctld", "-f", str(conf)], env=cluster.env, check=True,
                       capture_output=True, text=True, timeout=30)
        cluster.pids["slurmctld"] = _read_pid(root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(conf), "-N", NODE], env=cluster.env, check=True,
                       capture_output=True, text=True, timeout=30)
        cluster.pids["slurmd"] = _read_pid(root / "slurmd.pid")
        end = time.time() + 60
        while time.time() < end:
            out = cluster.run("sinfo", "-h", "-N", "-o", "%t").stdout.strip()
            if out in ("idle", "mix", "alloc"):
                return cluster
            time.sleep(0.5)
        slurmd_log = root / "log" / "slurmd.log"
        log = slurmd_log.read_text()[-2000:] if slurmd_log.exists() else ""
        raise ClusterUnavailable(f"node did not become idle (sinfo: {out!r}); slurmd log: {log}")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        cluster.stop()
        detail = getattr(e, "stderr", "") or ""
        raise ClusterUnavailable(f"could not start the daemons: {e} {detail}".strip()) from None
    except ClusterUnavailable:
        cluster.stop()
        raise
