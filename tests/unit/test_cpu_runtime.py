"""train.threads / compile / attention / allocator: validation, thread counts, allocator discovery and the one
restart of `tuneforge train` with the allocator preloaded (never a second one)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

from tuneforge.config.auto import resolve_auto
from tuneforge.config.load import load_config
from tuneforge.methods import get_method
from tuneforge.train import cpu_runtime as rt
from tuneforge.train.trainer import training_arguments
from tuneforge.utils.errors import ConfigError

BASE = ["data.train=train.jsonl"]


def test_defaults_are_auto_and_compile_off():
    t = load_config(None, BASE).train
    assert (t.threads, t.compile, t.attention, t.allocator) == ("auto", False, "auto", "auto")


@pytest.mark.parametrize("override, needle", [
    ("train.threads=0", "train.threads"), ("train.threads=many", "train.threads"),
    ("train.attention=flash", "'eager' or 'varlen'"), ("train.allocator=mimalloc", "'jemalloc' or 'tcmalloc'"),
    ("train.compile=maybe", "train.compile"),
])
def test_bad_values_name_the_key_and_the_choices(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, BASE + [override])
    assert needle in str(err.value)


def test_compile_maps_onto_the_trainers_torch_compile(tmp_path):
    def args(compile_: bool):
        cfg = load_config(None, BASE + ["train.batch_size=2", "train.epochs=1", "train.learning_rate=1e-3",
                                        f"output.dir={tmp_path / 'run'}", f"train.compile={compile_}"])
        resolved = resolve_auto(cfg.train, get_method(cfg.method), 8, "cpu")
        return training_arguments(cfg, resolved, tmp_path, "cpu", 8)

    on, off = args(True), args(False)
    assert on.torch_compile and on.torch_compile_backend == "inductor"
    assert not off.torch_compile


def test_threads_explicit_env_and_split_between_local_processes(monkeypatch):
    monkeypatch.setattr(rt, "physical_cores", lambda: 8)
    assert rt.resolve_threads(3, {}) == (3, "train.threads")
    assert rt.resolve_threads("auto", {"OMP_NUM_THREADS": "4"}) == (4, "OMP_NUM_THREADS")
    assert rt.resolve_threads("auto", {}) == (8, "8 physical cores")
    assert rt.resolve_threads("auto", {"LOCAL_WORLD_SIZE": "2"})[0] == 4
    assert rt.resolve_threads("auto", {"LOCAL_WORLD_SIZE": "16"})[0] == 1  # never 0


def test_physical_cores_is_within_the_cpus_this_process_may_use():
    assert 1 <= rt.physical_cores() <= len(os.sched_getaffinity(0))


def test_attention_auto_is_sdpa_and_varlen_for_packed_data_on_the_cpu():
    assert [rt.attention_kernel(s) for s in ("auto", "sdpa", "eager", "varlen")] == ["sdpa", "sdpa", "eager", "varlen"]
    assert [rt.attention_kernel(s, packing=True) for s in ("auto", "sdpa", "eager")] == ["varlen", "sdpa", "eager"]
    # on a GPU varlen's per-sample loop loses to the masked sdpa (bench/gpu_knobs.py), unless asked for
    assert [rt.attention_kernel(s, True, "cuda:0") for s in ("auto", "varlen")] == ["sdpa", "varlen"]


def test_the_plan_names_the_attention_the_device_gets(tmp_path):
    from tuneforge.config.load import load_config

    (tmp_path / "d.jsonl").write_text("{}\n")
    cfg = load_config(None, [f"data.train={tmp_path / 'd.jsonl'}", "data.packing=true"])
    assert "attention varlen" in rt.runtime_line(cfg, "cpu") and "attention sdpa" in rt.runtime_line(cfg, "cuda")


# --------------------------------------------------------------------------------------------------- allocator

def _fake_libs(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return [str(tmp_path)]


def test_allocator_discovery_finds_the_library_file(tmp_path):
    dirs = _fake_libs(tmp_path, "libtcmalloc_minimal.so.4")
    assert rt.find_allocator("tcmalloc", dirs) == str(tmp_path / "libtcmalloc_minimal.so.4")
    assert rt.find_allocator("jemalloc", dirs) is None
    assert rt.choose_allocator("tcmalloc", dirs).preload


def test_missing_allocator_names_the_debian_package_and_falls_back(tmp_path):
    for setting, package in (("jemalloc", "libjemalloc2"), ("tcmalloc", "libtcmalloc-minimal4")):
        choice = rt.choose_allocator(setting, [str(tmp_path)])
        assert not choice.preload
        assert f"apt-get install {package}" in choice.note and "glibc malloc" in choice.note
    assert rt.choose_allocator("system", [str(tmp_path)]).wanted == "system"


def test_auto_keeps_glibc_malloc_the_fastest_measured(tmp_path):
    dirs = _fake_libs(tmp_path, "libjemalloc.so.2", "libtcmalloc_minimal.so.4")
    choice = rt.choose_allocator("auto", dirs)
    assert choice.wanted == "system" and not choice.preload and "auto" in choice.note
    assert rt.preload_env("auto", {}, "system", dirs) is None  # nothing to restart for


def test_preload_env_prepends_the_library_and_sets_the_marker(tmp_path):
    dirs = _fake_libs(tmp_path, "libjemalloc.so.2")
    env = rt.preload_env("jemalloc", {"LD_PRELOAD": "/opt/other.so", "KEEP": "1"}, "system", dirs)
    assert env["LD_PRELOAD"] == f"{tmp_path / 'libjemalloc.so.2'} /opt/other.so"
    assert env[rt.MARKER] == "jemalloc" and env["KEEP"] == "1"
    assert env["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # freed pages kept for the next step
    assert rt.preload_env("jemalloc", {"MALLOC_CONF": "narenas:2"}, "system", dirs)["MALLOC_CONF"] == "narenas:2"


def test_no_restart_when_marked_loaded_unwanted_or_missing(tmp_path):
    dirs = _fake_libs(tmp_path, "libjemalloc.so.2")
    assert rt.preload_env("jemalloc", {rt.MARKER: "jemalloc"}, "system", dirs) is None  # this is the restart
    assert rt.preload_env("jemalloc", {}, "jemalloc", dirs) is None  # already preloaded
    assert rt.preload_env("system", {}, "system", dirs) is None
    assert rt.preload_env("tcmalloc", {}, "system", dirs) is None  # not installed


def test_loaded_allocator_reads_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n")
    assert rt.loaded_allocator(str(maps)) == "tcmalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert rt.loaded_allocator(str(maps)) == "system"
    assert rt.loaded_allocator(str(tmp_path / "absent")) == "system"


def test_an_in_process_host_is_never_restarted():
    assert not rt.launched_as_program()  # pytest's own process: restarting it would rerun the whole session


# A script that counts its own starts, then asks for jemalloc from a folder where "libjemalloc.so.2" is a symlink to
# libm: the loader maps libm's real path, so the process never sees jemalloc loaded — only the marker stops it.
_RESTARTER = """
    import os, sys
    from tuneforge.train import cpu_runtime as rt
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.environ.get(rt.MARKER, '-')} {os.environ.get('LD_PRELOAD', '-')}\\n")
    if sum(1 for _ in open(sys.argv[1])) > 4:
        sys.exit(3)  # a loop: stop it here rather than forever
    rt.library_dirs = lambda: [sys.argv[2]]
    rt.reexec_with_allocator("jemalloc", own_process=True)
"""


def test_the_marker_allows_exactly_one_restart(tmp_path):
    libm = next(iter(glob.glob("/usr/lib/*-linux-gnu/libm.so.6") + glob.glob("/lib*/libm.so.6")), None)
    assert libm, "no libm.so.6 to stand in for an allocator"
    (tmp_path / "libs").mkdir()
    os.symlink(libm, tmp_path / "libs" / "libjemalloc.so.2")
    script, starts = tmp_path / "restarter.py", tmp_path / "starts.txt"
    script.write_text(textwrap.dedent(_RESTARTER))
    env = {k: v for k, v in os.environ.items() if k not in (rt.MARKER, "LD_PRELOAD")}
    proc = subprocess.run([sys.executable, str(script), str(starts), str(tmp_path / "libs")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = starts.read_text().splitlines()
    assert lines == ["- -", f"jemalloc {tmp_path / 'libs' / 'libjemalloc.so.2'}"]


def test_the_note_says_where_the_allocator_in_use_came_from(monkeypatch, tmp_path):
    dirs = _fake_libs(tmp_path, "libjemalloc.so.2")
    monkeypatch.setattr(rt, "library_dirs", lambda: dirs)
    monkeypatch.delenv(rt.MARKER, raising=False)
    monkeypatch.setattr(rt, "loaded_allocator", lambda: "jemalloc")
    assert rt.allocator_note("jemalloc") == ("jemalloc", f"jemalloc ({dirs[0]}/libjemalloc.so.2)")
    assert rt.allocator_note("system")[1] == "jemalloc, preloaded by the environment (LD_PRELOAD)"
    monkeypatch.setattr(rt, "loaded_allocator", lambda: "system")
    assert "only by the `tuneforge train` command" in rt.allocator_note("jemalloc")[1]  # an in-process run
    assert rt.allocator_note("auto") == ("system", "glibc malloc (train.allocator=auto)")
    monkeypatch.setenv(rt.MARKER, "jemalloc")
    assert "could not be preloaded" in rt.allocator_note("jemalloc")[1]  # restarted, yet not loaded


# A process that fills and frees five 20 MiB blocks per cycle, as a training step fills and frees activations, and
# counts the page faults of five cycles after two warm ones (glibc's defaults trim the freed top of the heap, so
# every cycle faults the blocks in again).
_CYCLER = """
    import ctypes, resource, sys
    from tuneforge.train import cpu_runtime as rt
    applied = rt.keep_freed_memory(sys.argv[1], own_process=True)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    def cycle():
        blocks = [libc.malloc(20 << 20) for _ in range(5)]
        for b in blocks:
            ctypes.memset(b, 1, 20 << 20)
        for b in blocks:
            libc.free(b)
    cycle(); cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        cycle()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, rt.allocator_note(sys.argv[1])[1])
"""


@pytest.mark.skipif(rt._glibc() is None, reason="glibc's malloc only (mallopt)")
def test_auto_keeps_freed_heap_memory_so_a_step_does_not_fault_it_in_again(tmp_path):
    script = tmp_path / "cycler.py"
    script.write_text(textwrap.dedent(_CYCLER))
    env = {k: v for k, v in os.environ.items() if k not in (*rt.GLIBC_MALLOC_ENV, "LD_PRELOAD")}
    runs = {}
    for setting in ("system", "auto"):
        proc = subprocess.run([sys.executable, str(script), setting], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        applied, faults, note = proc.stdout.strip().split(" ", 2)
        runs[setting] = (applied, int(faults), note)
    assert runs["system"][0] == "False" and runs["system"][1] > 5 * 5 * 5120 // 2  # refaulted every cycle
    assert runs["auto"] == ("True", runs["auto"][1], rt.KEPT_NOTE) and runs["auto"][1] < 1000


def test_keeping_freed_memory_is_for_the_train_command_under_auto_only(monkeypatch):
    monkeypatch.setattr(rt, "loaded_allocator", lambda: "system")
    assert not rt.keep_freed_memory("auto", own_process=False)  # a host running training in-process: untouched
    assert not rt.keep_freed_memory("system", own_process=True)
    for name in ("MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):  # the user tuned glibc: left as they set it
        assert not rt.keep_freed_memory("auto", own_process=True, env={name: "1"})
    monkeypatch.setattr(rt, "loaded_allocator", lambda: "tcmalloc")
    assert not rt.keep_freed_memory("auto", own_process=True, env={})  # another allocator is preloaded
    assert not rt._KEPT[0]
