"""Multi-process helpers for torchrun / accelerate launch: rank checks, one decision shared by all ranks."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_device(device: str) -> str:
    """Under a launcher each process takes the GPU of its local rank."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def _ensure_group() -> bool:
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as td

    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend=backend)
    return True


def decide(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank (e.g. the output folder to use)."""
    if not _ensure_group():
        return fn()
    import torch.distributed as td

    box = [fn() if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _ensure_group():
        import torch.distributed as td

        td.barrier()
