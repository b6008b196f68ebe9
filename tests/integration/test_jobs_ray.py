"""Fine-tuning jobs through `tuneforge serve --executor ray`: the worker runs in a detached Ray actor on a local Ray
head, trains the 656K TinyStories base to a model the server answers with, and a server started after the first
one (and after its Ray driver disconnected) adopts a running job's actor instead of starting the job again.

The module starts its own Ray head on 127.0.0.1 and free ports, and stops it with `ray stop --force` at the end
(which stops every Ray process of this machine: nothing else here runs Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from test_serve_jobs import ROWS, create, messages, metric_steps, registry_job, start_server, wait_for, wait_for_step

from tuneforge.infer.engine import Engine
from tuneforge.jobs.ray_executor import NAMESPACE, actor_name
from tuneforge.serve.settings import ServeSettings

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

SKY = [{"role": "user", "content": "What color is the sky?"}]
RAY_BIN = Path(sys.executable).parent / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    """A one-node Ray head, kept small: 2 CPUs, no GPU, no dashboard, 80 MB of object store."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="tfray-")  # short: Ray's socket paths must fit in 107 characters
    subprocess.run([str(RAY_BIN), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                    "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
                    "--object-store-memory", str(80 << 20), "--temp-dir", temp],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()  # before the head goes: Ray ends a driver whose head is gone for a minute
        subprocess.run([str(RAY_BIN), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def named_actors(address: str) -> list[dict]:
    ray.init(address=address, namespace=NAMESPACE, ignore_reinit_error=True, log_to_driver=False)
    return ray.util.list_named_actors(all_namespaces=True)


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory, ray_address):
    root = tmp_path_factory.mktemp("serve-ray")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}",
                         executor="ray", ray_address=ray_address)


@pytest.fixture(scope="module")
def server(settings):
    srv = start_server(settings)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def training_file(server, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "colors.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with path.open("rb") as f:
        return server.client.files.create(file=f, purpose="fine-tune")


def wait_for_worker(settings, job_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while (job := registry_job(settings, job_id)).worker_ref is None:
        assert job.status in ("queued", "running") and time.monotonic() < deadline, f"no worker: {job.status}"
        time.sleep(0.05)
    return job


def test_a_job_trains_in_a_ray_actor_and_its_model_answers(server, settings, training_file):
    client = server.client
    job = create(client, training_file)
    running = wait_for_worker(settings, job.id)
    name = actor_name(job.id, 1)
    assert running.worker_ref == name and running.executor == "ray" and running.worker_pid is not None
    assert {"name": name, "namespace": NAMESPACE} in named_actors(settings.ray_address)
    actor_process = psutil.Process(running.worker_pid).parent()  # the worker is the actor's subprocess
    assert actor_process.cmdline()[0].startswith("ray::WorkerActor"), actor_process.cmdline()

    done = wait_for(client, job.id, ("succeeded",), timeout=180)
    assert done.fine_tuned_model.startswith("ft:tiny:colors:") and done.trained_tokens > 0
    log = (Path(settings.storage) / "jobs" / job.id / "worker.log").read_text()
    assert log.startswith(f"[tuneforge] Ray actor {NAMESPACE}/{name} on node ")
    deadline = time.monotonic() + 30
    while any(a["name"] == name for a in named_actors(settings.ray_address)):  # freed once its worker exited
        assert time.monotonic() < deadline, "the job's actor was not freed"
        time.sleep(0.2)

    r = client.chat.completions.create(model=done.fine_tuned_model, messages=SKY, temperature=0, max_tokens=8)
    engine = Engine.load(settings.model, os.path.join(registry_job(settings, job.id).run_dir, "adapter"),
                         device="cpu")
    assert r.choices[0].message.content == engine.generate([SKY], max_new_tokens=8)[0].text


def test_cancel_stops_the_worker_through_its_actor(server, settings, training_file):
    client = server.client
    job = create(client, training_file, **{"train.max_steps": 5000, "train.save_steps": 0})
    name = wait_for_worker(settings, job.id).worker_ref
    wait_for_step(client, job.id, 2)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    deadline = time.monotonic() + 60
    while registry_job(settings, job.id).worker_ref is not None:  # SIGTERM went through the actor; it stopped
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.1)
    assert max(metric_steps(client, job.id)) < 5000 and client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert all(a["name"] != name for a in named_actors(settings.ray_address))


def test_a_restarted_server_adopts_the_running_jobs_actor(server, settings, training_file):
    """Server A and its Ray driver go while the job trains; the detached actor goes on, and server B finds it by
    name: the job ends on its first start, each step trained once."""
    server.stop()
    a = start_server(settings)
    job = create(a.client, training_file, **{"train.max_steps": 300, "train.save_steps": 0})  # ~10 s of training
    wait_for_step(a.client, job.id, 3)
    a.stop()
    ray.shutdown()  # the driver disconnects: a non-detached actor would die here, and its worker with it
    assert {"name": actor_name(job.id, 1), "namespace": NAMESPACE} in named_actors(settings.ray_address)
    b = start_server(settings)
    try:
        assert registry_job(settings, job.id).status == "running"  # B starts while the job trains
        done = wait_for(b.client, job.id, ("succeeded", "failed"), timeout=180)
        assert done.status == "succeeded" and registry_job(settings, job.id).attempts == 1, done.error
        steps = metric_steps(b.client, job.id)
        assert steps == sorted(set(steps)) and steps[-1] == 300
        assert not any("stopped unexpectedly" in m for m in messages(b.client, job.id))
    finally:
        b.stop()
