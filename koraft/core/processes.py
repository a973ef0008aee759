"""Which process this is, when a stage runs across processes under `accelerate launch` / torchrun.

Read from the environment the launcher exports, so every module can ask without importing the launcher.
"""

from __future__ import annotations

import os


def launched() -> bool:
    """True inside a process started by `accelerate launch` / torchrun."""
    return "LOCAL_RANK" in os.environ


def engine() -> str:
    """The engine of this process: single, ddp, fsdp or deepspeed (from what accelerate launch exported)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def is_main_process() -> bool:
    """Rank 0 of all processes on all machines; the only one that writes outputs and metrics."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def start_process_group() -> None:
    """Join the other processes now (accelerate's PartialState, which the trainer reuses), so that
    rank 0 can prepare the checkpoint folder before the others read it. A no-op in one process."""
    if launched():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def wait_for_everyone() -> None:
    """A barrier across all processes; a no-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
