"""Multi-process training helpers: one code path for 1 process, ``torchrun`` on one node, or many nodes.

Launch any entry point under ``torchrun`` and it becomes data-parallel (DDP)::

    torchrun --nproc_per_node 8 -m hiera_video train k400_finetune_hiera_base_16x224 data.root=/data/k400
    # several nodes: add --nnodes N --node_rank R --rdzv_endpoint HOST:PORT on each

:func:`init_distributed` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts a process group: NCCL when every rank has a GPU, Gloo on CPU. Without them it is a no-op and the same
code runs single-process. Only rank 0 logs and writes checkpoints (:attr:`DistInfo.is_main`); metrics are
summed across ranks with :func:`all_reduce_sum` before being reported.

Models that do not fit on one GPU
---------------------------------
DDP keeps a full replica (weights, gradients, optimizer state: ~16 bytes per parameter in fp32 AdamW) on
every GPU; activations are the larger cost for video and are cut first with
``model.grad_checkpointing=true`` and bf16. When the replica itself does not fit (Hiera-H in fp32 AdamW
needs ~11 GB before activations; more for bigger variants), shard it with FSDP:
``torch.distributed.fsdp.fully_shard`` (FSDP2) applied to each ``model.blocks[i]`` and then to the root,
with ``MixedPrecisionPolicy(param_dtype=torch.bfloat16)``. Each block is an independent unit, so the
wrapping policy is one loop. The rest of the engine (sampler, loss reduction, checkpoint on rank 0) is
unchanged except that checkpoints must gather a full state dict
(``torch.distributed.checkpoint.state_dict.get_state_dict`` with ``full_state_dict=True``). This library
does not wire FSDP into the CLI yet: every published Hiera fits a single 80 GB GPU with DDP.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "launched_with_torchrun",
    "resolve_device",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Who this process is. ``world_size == 1`` and ``rank == 0`` when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_with_torchrun() -> bool:
    """True when torchrun (or any launcher following its conventions) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else CPU; ``cuda`` without a GPU is an error."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA GPU is available; use train.device=cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Start the process group when launched by torchrun; otherwise return the single-process info.

    The backend follows the device: NCCL for GPUs, Gloo for CPU (also what the tests use). Calling it
    twice is harmless.
    """
    if not launched_with_torchrun():
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity when single-process) and return it."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank (in rank order); ``[obj]`` when single-process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (no-op when single-process)."""
    if not _active():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=src)


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap in DistributedDataParallel when distributed; the model unchanged otherwise.

    DDP averages gradients over ranks during backward, so with equal per-rank batches one step equals a
    single-process step on the concatenated batch.
    """
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP and ``torch.compile`` wrappers (for saving, EMA and evaluation)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile's OptimizedModule
        else:
            return model
