"""Train one sweep cell in a child process, so that the cell's peak memory (RSS) is its own.

Why a child process: a process's peak RSS is the high-water mark of its whole life. Measured inside the sweep
process, a cell would report the largest peak of any cell (or evaluation) before it. So every cell trains in a
fresh `python -m tuneforge.sweep.child CELL.yaml --group GROUP_ID --peak-file FILE`, which writes its own peak RSS
(VmHWM of its address space) to FILE as it exits; the sweep records it as the cell's peak RSS. Not the ru_maxrss
that os.wait4 returns: on Linux a child started by fork/vfork + exec inherits its parent's high-water mark there,
so every cell of a sweep whose process had grown to 4 GB would report at least 4 GB. The number is all that the
training process held at its peak: the interpreter and the libraries it imports (torch, transformers, peft: a
few hundred MB that every cell pays alike), the model, the method's trainable parameters, optimizer state,
activations and data. The cell's evaluation runs afterwards in the sweep process and is not part of it. A cell
resumed after an interruption keeps the largest peak of its processes. A child killed before it could write the
file has no peak RSS.

The child reads the cell's run config (written by the sweep with `save_config`, every path already resolved) and
calls `tuneforge.train.runner.train(cfg, group_id=...)`: the run joins the sweep's registry group, and the
trainer's own resume (train.resume=auto) continues an interrupted cell. (`tuneforge train` has no option for a
registry group, so the child is this module rather than that command.)

Signals: the child runs in its own session, so a Ctrl-C on the terminal reaches only the sweep, which forwards each
SIGINT/SIGTERM it receives to the child: the trainer saves a checkpoint and stops (a second Ctrl-C aborts), as
under `tuneforge train`. Exit codes: 0 succeeded, 130 interrupted, 2 a tuneforge error (printed), 1 a crash.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

EXIT_INTERRUPTED = 130
EXIT_USER_ERROR = 2
_INTERRUPTED = {EXIT_INTERRUPTED, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}


@dataclass
class ChildRun:
    """How one cell's training process ended."""

    exit_code: int
    peak_rss_mb: float | None

    @property
    def status(self) -> str:
        if self.exit_code == 0:
            return "succeeded"
        return "interrupted" if self.exit_code in _INTERRUPTED else "failed"

    def describe_failure(self) -> str:
        if self.exit_code < 0:
            name = signal.Signals(-self.exit_code).name
            oom = " (SIGKILL: often the system running out of memory)" if -self.exit_code == signal.SIGKILL else ""
            return f"was killed by {name}{oom}"
        return f"exited with code {self.exit_code}"


def peak_rss_mb(usage) -> float:
    """ru_maxrss in MB: Linux reports kilobytes, macOS bytes."""
    per_mb = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(usage.ru_maxrss / per_mb, 1)


@contextmanager
def _forward_signals(proc: subprocess.Popen):
    """While the child runs, SIGINT/SIGTERM to the sweep are passed on to it (the trainer decides what to do)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    forwarded = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, _frame: proc.send_signal(signum)) for sig in forwarded}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def own_peak_mb() -> float | None:
    """This process's own peak RSS in MB: VmHWM of its address space (Linux). Not ru_maxrss: on Linux a process
    started by fork/vfork + exec inherits its parent's high-water mark there, so a child of a 4 GB sweep process
    would report at least 4 GB. Elsewhere ru_maxrss is the best there is."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        import resource

        return peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF))
    except (ImportError, OSError):
        return None


def _read_peak(path: Path) -> float | None:
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None  # the child died before writing it (killed), or never started


def train_in_child(config_file: Path, group_id: str) -> ChildRun:
    """Train the run config in `config_file` in a child process (see module docstring) and wait for it."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tuneforge-cell-") as tmp:
        peak_file = Path(tmp) / "peak_mb"
        cmd = [sys.executable, "-m", "tuneforge.sweep.child", str(config_file), "--group", group_id,
               "--peak-file", str(peak_file)]
        proc = subprocess.Popen(cmd, start_new_session=True)
        with _forward_signals(proc):
            code = proc.wait()  # retried by Python when a forwarded signal interrupts it
        return ChildRun(code, _read_peak(peak_file))


def _load_run_config(path: Path):
    import yaml

    from tuneforge.config.load import validate
    from tuneforge.utils.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"sweep cell config {path} does not exist", hint="run the sweep again: it writes it")
    return validate(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def _train(config_file: Path, group_id: str) -> int:
    cfg = _load_run_config(config_file)
    from tuneforge.train.runner import train

    result = train(cfg, group_id=group_id)
    return 0 if result.status == "succeeded" else EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    from tuneforge.utils.console import console
    from tuneforge.utils.errors import TuneforgeError

    parser = argparse.ArgumentParser(prog="python -m tuneforge.sweep.child", description="Train one sweep cell.")
    parser.add_argument("config", type=Path, help="the cell's run config (written by the sweep)")
    parser.add_argument("--group", required=True, help="the sweep's registry group id")
    parser.add_argument("--peak-file", type=Path, help="where to write this process's own peak RSS in MB")
    args = parser.parse_args(argv)
    try:
        return _train(args.config, args.group)
    except TuneforgeError as err:
        console.print(f"[bold red]error:[/bold red] {err.message}")
        if err.hint:
            console.print(f"[yellow]hint:[/yellow] {err.hint}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        peak = own_peak_mb()
        if args.peak_file and peak is not None:
            args.peak_file.write_text(str(peak))


if __name__ == "__main__":
    sys.exit(main())
