"""The `ray` executor: each fine-tuning job's worker runs on a Ray cluster (`tuneforge serve --executor ray
--ray-address HOST:PORT`).

How a job runs. A job's start is one *detached, named* actor (namespace "tuneforge", name
`tuneforge-<job id>-attempt-<n>` with n = the job's `attempts`): detached, so it outlives the server (Ray's driver)
and a restarted server finds it again by name (`ray.get_actor`) and adopts it; one name per start, so a leftover of
an earlier start never collides with the next one. The actor's constructor starts the same command the local
executor runs, `python -m tuneforge.jobs.worker JOB_ID --storage DIR`, as a subprocess of its node, its output
appended to the job's log (after one line that names the actor and node). The constructor, not a method call,
starts it, so a worker starts exactly when Ray places the actor, even if the server that asked is gone by then. The
subprocess stays in the actor's process group, which Ray kills with the actor: a worker never outlives its actor.
The interpreter is the node's own (the Python running the actor, which has tuneforge installed, or the actor could
not be loaded), because the server's `sys.executable` need not exist on another machine.

How the scheduler sees it (jobs.scheduler):
- launch: creates the actor and waits up to LAUNCH_WAIT_S for the worker's pid, host and start time; the record
  keeps them (with ref = the actor's name), so liveness can fall back to the pid when Ray cannot be reached and the
  server runs on the worker's machine. An actor still waiting for resources (a busy cluster, a GPU) reports nothing
  yet: pid None, and the job stays `running` while Ray holds it.
- state: no actor of that name → dead; the worker exited → dead (its exit code is kept for exit_code, and the
  actor is killed to free its resources); the worker runs, or the actor does not answer within POLL_S (still being
  placed, or busy) → alive. A cluster that cannot be reached → the pid check on this host, else "unknown", and the
  scheduler goes by the job's heartbeat.
- exit_code: the kept code; also kills the actor should it still exist, because the scheduler calls it once it has
  judged the worker gone, also when that judgement came from a stale heartbeat; so a worker is never left running
  beside the job's next start.
- stop: SIGTERM through the actor (the worker stops after its current step, saving a checkpoint when pausing);
  force: SIGKILL to the worker, then the actor is killed.

Resources. The actor asks for TUNEFORGE_RAY_NUM_CPUS CPUs (default 1) and TUNEFORGE_RAY_NUM_GPUS GPUs (default 1
when the cluster has any GPU, else 0); Ray places it on a node that has them and sets CUDA_VISIBLE_DEVICES for it,
which the worker inherits. Ray also sets OMP_NUM_THREADS to the actor's CPU count (unless the node's environment
sets it), so a worker trains with that many threads: raise TUNEFORGE_RAY_NUM_CPUS for training on CPUs.
Both are read from the server's environment at each launch.

Environment. The worker gets the node's environment (as Ray's worker processes have it) plus what the scheduler
passes (TUNEFORGE_REGISTRY_URL), not the server's: caches (HF_HOME, TUNEFORGE_HOME) and offline settings belong to
each node's `ray start` environment.

Files and artifacts. The worker and the server only exchange paths and registry rows, so every node must see the
server's storage folder (uploaded files, runs, checkpoints, logs) at the same path, and the registry at the same
URL: a shared filesystem (NFS, a cluster filesystem) and PostgreSQL, not SQLite, for a real cluster; the base
model must resolve on every node as well. An object store plugs in below that contract, as a bucket mounted at the
same path on every node by a FUSE filesystem (s3fs, gcsfuse, blobfuse2, or a CSI driver on Kubernetes); nothing in
tuneforge changes. Checkpoints then go to the bucket as they are written.

Caveats (Ray's behaviour, not tuneforge's). `ray.init` on an address nobody answers hangs for minutes, so the
executor first opens a TCP connection to a `host:port` address (CONNECT_TIMEOUT_S) and reports the cluster
unreachable at once. A connected driver whose Ray head disappears for longer than Ray's
gcs_rpc_server_reconnect_timeout_s (60 s) is ended by Ray, and that driver is the server process: the jobs stay in
the registry, their detached actors on the cluster, and the next server adopts or settles them. Without an address
the executor uses RAY_ADDRESS, else "auto" (a cluster already started on this machine); it never starts a private
cluster inside the server, whose actors would die with it.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tuneforge.jobs.executors import Launched
from tuneforge.registry.liveness import owner_state
from tuneforge.utils.errors import ConfigError

NAMESPACE = "tuneforge"
LAUNCH_WAIT_S = 10.0  # how long launch waits for the worker's pid (an actor waiting for resources takes longer)
POLL_S = 2.0  # an actor that does not answer a poll within this is taken as alive (being placed, or busy)
CONNECT_TIMEOUT_S = 3.0
_INSTALL_HINT = "pip install 'tuneforge[ray]'"


def actor_name(job_id: str, attempt: int) -> str:
    return f"tuneforge-{job_id}-attempt-{attempt}"


class WorkerActor:
    """Runs inside Ray (wrapped by `ray.remote` when launched): starts the job's worker on its node and answers for
    it. A plain class, so this module imports without Ray."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: str):
        import psutil
        import ray

        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        node = ray.get_runtime_context().get_node_id()
        command = [sys.executable, *argv[1:]]  # this node's Python, not the server's path
        with log.open("ab") as out:
            out.write(f"[tuneforge] Ray actor {NAMESPACE}/{name} on node {node} ({host}) starts the worker: "
                      f"{' '.join(command)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **env}, cwd=str(log.parent))
        try:
            start = int(round(psutil.Process(self.proc.pid).create_time() * 1000))
        except psutil.Error:
            start = None
        self.where = {"pid": self.proc.pid, "host": host, "start": start, "node": node}

    def info(self) -> dict:
        return self.where

    def poll(self) -> int | None:
        """None while the worker runs, else its exit code (negative: the signal that ended it)."""
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


def _number(var: str, default: float | None) -> float | None:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"{var} must be a number of at least 0, got {raw!r}")
    return value


def _reachable(address: str) -> None:
    """Fail fast on a host:port nobody answers (ray.init would wait for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return  # "auto", ray:// and the like: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConnectionError(f"the Ray cluster at {address} cannot be reached: {err}") from err


def _attempt(job_id: str, env: dict[str, str]) -> int:
    """The start this launch is (the scheduler counted it in the job's record just before)."""
    from tuneforge.jobs import store as js
    from tuneforge.registry.store import open_store

    return js.get_job(open_store(env.get("TUNEFORGE_REGISTRY_URL") or None), None, job_id).attempts


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            importlib.import_module("ray")
        except ImportError as err:
            raise ConfigError("the ray executor needs the `ray` package, which is not installed",
                              hint=_INSTALL_HINT) from err
        self.address = address or os.environ.get("RAY_ADDRESS") or "auto"
        self._lock = threading.Lock()
        self._actors: dict[str, object] = {}  # actor name → handle
        self._codes: dict[str, int | None] = {}  # actor name → its worker's exit code, until exit_code() reads it
        self._actor_class = None

    def _ray(self):
        """The ray module, connected to the cluster (once; again after a ray.shutdown)."""
        import ray

        with self._lock:
            if not ray.is_initialized():
                _reachable(self.address)
                ray.init(address=self.address, namespace=NAMESPACE, ignore_reinit_error=True, log_to_driver=False)
        return ray

    def _resources(self, ray) -> dict:
        gpus = _number("TUNEFORGE_RAY_NUM_GPUS", None)
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return {"num_cpus": _number("TUNEFORGE_RAY_NUM_CPUS", 1.0), "num_gpus": gpus}

    def launch(self, job_id: str, argv: list[str], env: dict[str, str], log_path: Path) -> Launched:
        ray = self._ray()
        name = actor_name(job_id, _attempt(job_id, env))
        self._actor_class = self._actor_class or ray.remote(WorkerActor)
        actor = self._actor_class.options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=0, **self._resources(ray),
        ).remote(name, list(argv), dict(env), str(log_path))
        self._actors[name] = actor
        try:
            where = ray.get(actor.info.remote(), timeout=LAUNCH_WAIT_S)
        except ray.exceptions.GetTimeoutError:
            return Launched(None, None, None, name)  # waiting for resources: the worker starts when placed
        except ray.exceptions.RayActorError:
            self._actors.pop(name, None)
            raise  # the worker could not start there (the error says why); the scheduler fails the job with it
        return Launched(where["pid"], where["host"], where["start"], name)

    def _handle(self, ray, name: str):
        """The actor's handle, or None when no actor has that name (it ended, or was never created)."""
        handle = self._actors.get(name)
        if handle is None:
            try:
                handle = self._actors[name] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return None
        return handle

    def state(self, job) -> str:
        name = job.worker_ref
        if not name:
            return owner_state(job.worker_pid, job.worker_host, job.worker_start)  # not started by this executor
        if name in self._codes:
            return "dead"
        try:
            ray = self._ray()
            handle = self._handle(ray, name)
            if handle is None:
                return "dead"
            code = ray.get(handle.poll.remote(), timeout=POLL_S)
        except Exception as err:  # noqa: BLE001 - the Ray errors below, or an unreachable cluster
            return self._judge_error(err, job)
        if code is None:
            return "alive"
        self._codes[name] = code
        self._release(name)
        return "dead"

    def _judge_error(self, err: Exception, job) -> str:
        import ray

        if isinstance(err, ray.exceptions.GetTimeoutError):
            return "alive"  # the actor exists but is still being placed, or busy
        if isinstance(err, ray.exceptions.RayActorError):
            self._actors.pop(job.worker_ref, None)
            return "dead"
        return owner_state(job.worker_pid, job.worker_host, job.worker_start)  # "unknown" from another host

    def exit_code(self, job) -> int | None:
        name = job.worker_ref
        if not name:
            return None
        code = self._codes.pop(name, None)
        self._release(name)
        return code

    def _release(self, name: str) -> None:
        """Kill the actor (its worker with it) if it still exists; an unreachable cluster is left alone."""
        handle = self._actors.pop(name, None)
        try:
            ray = self._ray()
            handle = handle or self._handle(ray, name)
            if handle is not None:
                ray.kill(handle, no_restart=True)
            self._actors.pop(name, None)
        except Exception:  # noqa: BLE001 - already gone, or Ray unreachable: nothing to free from here
            pass

    def stop(self, job, *, force: bool = False) -> None:
        name = job.worker_ref
        if not name:
            return
        try:
            ray = self._ray()
            handle = self._handle(ray, name)
            if handle is None:
                return
            ray.get(handle.signal.remote(int(signal.SIGKILL if force else signal.SIGTERM)), timeout=POLL_S)
        except Exception:  # noqa: BLE001 - gone already, or unreachable; the scheduler asks again or forces
            pass
        if force:
            self._release(name)
