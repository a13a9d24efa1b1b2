"""Data-parallel training across processes (torch.distributed): who am I, which examples are mine, sums.

The model is replicated on every rank; each optimizer step's examples (planned up front, identical on
every rank) are split across the ranks (:func:`shard_step`), each rank back-propagates its share and the
gradients are SUMMED across ranks (``hps_core.train.loop``). Because the loss of every micro-batch is
divided by the example count of the whole global step, the sum is exactly the single-process gradient of
the same global batch: the number of processes changes the speed, never the math. (With ``[resources]
strategy = "fsdp"`` the model is sharded rather than replicated, :mod:`hps_core.train.fsdp`; the split of
the examples and the summed gradient are the same.)

Launched by torchrun (``python -m torch.distributed.run --nproc-per-node N -m hps_core.train.launch
spec.json``, see :mod:`hps_core.train.launch`), which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous address; :func:`init_from_env` joins the group (NCCL on GPUs, gloo on CPU). Without a
process group every helper here is a no-op for one process, so the trainer needs no ``if distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes checkpoints, the final model and logged metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def current() -> DistContext:
    """This process's place in the initialised process group; rank 0 of 1 when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    rank = dist.get_rank()
    return DistContext(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def init_from_env(timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group torchrun describes in the environment (no-op when ``WORLD_SIZE`` is unset
    or 1). On GPUs each local rank takes ``cuda:<LOCAL_RANK>`` as its current device, so every
    ``torch.device("cuda")`` of the loaders lands on the process's own GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: this node shows {torch.cuda.device_count()} GPU(s) but "
                f"torchrun started more processes; set [resources] processes_per_node to at most the GPU count"
            )
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def contiguous_share(items: Sequence[Any], rank: int, world_size: int) -> list:
    """Rank ``rank``'s contiguous part of ``items``: sizes differ by at most one, the first ranks take the
    extra items, and a rank may get none when there are fewer items than ranks.

    >>> [contiguous_share(range(5), r, 2) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    >>> [contiguous_share([7], r, 3) for r in range(3)]
    [[7], [], []]
    """
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def shard_step(micro_batches: Sequence[Any], rank: int, world_size: int) -> list:
    """This rank's micro-batches of one optimizer step; over all ranks, exactly the step's examples.

    List micro-batches (lists of examples) are flattened, split contiguously across ranks
    (:func:`contiguous_share`) and cut again into micro-batches no larger than the step's largest, so
    per-device memory never exceeds the single-process plan's. When the step is ``k * world_size`` full
    micro-batches, each rank gets exactly ``k`` of the single-process micro-batches. Opaque micro-batches
    (not lists) are dealt whole, round-robin. A rank may get nothing (a short last step).

    >>> [shard_step([[0, 1], [2, 3], [4]], r, 2) for r in range(2)]
    [[[0, 1], [2]], [[3, 4]]]
    """
    if world_size == 1:
        return list(micro_batches)
    if not all(isinstance(mb, list) for mb in micro_batches):
        return list(micro_batches[rank::world_size])
    size = max((len(mb) for mb in micro_batches), default=1)
    mine = contiguous_share([x for mb in micro_batches for x in mb], rank, world_size)
    return [mine[i : i + size] for i in range(0, len(mine), size)]


def stand_in(micro_batches: Sequence[Any]) -> list:
    """One micro-batch of a single example of the step, for a rank whose share of the step is empty: it
    runs forward and backward with weight 0 so that the rank takes part in the gradient all-reduce."""
    first = micro_batches[0]
    return [first[:1]] if isinstance(first, list) else [first]


def weighted_share(micro_batches: Sequence[Any], rank: int, world_size: int, *, lockstep: bool = False) -> list:
    """This rank's micro-batches of one optimizer step as ``(micro_batch, counts)`` pairs: its share
    (:func:`shard_step`), or one zero-weighted :func:`stand_in` (``counts`` False) when the share is empty,
    so the rank still joins the step's gradient reduction. ``lockstep`` (FSDP: every forward gathers
    weights, so every rank must run as many forwards as the others) pads with stand-ins up to the largest
    share's micro-batch count.

    >>> weighted_share([[0], [1], [2]], 1, 2)
    [([2], True)]
    >>> weighted_share([[0], [1], [2]], 1, 2, lockstep=True)
    [([2], True), ([0], False)]
    >>> weighted_share([[0]], 1, 2)
    [([0], False)]
    """
    mine = shard_step(micro_batches, rank, world_size)
    width = max(len(shard_step(micro_batches, r, world_size)) for r in range(world_size)) if lockstep else len(mine)
    padding = stand_in(micro_batches) * (max(width, 1) - len(mine))
    return [(mb, True) for mb in mine] + [(mb, False) for mb in padding]


def gather(value: Any) -> list:
    """Every rank's ``value`` (small, picklable), in rank order, on every rank."""
    if not current().enabled:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def sum_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Key-wise sums of every rank's ``values`` (a key missing on a rank counts as 0), the same dict on
    every rank, added in rank order so the result does not depend on timing."""
    total: dict[str, float] = {}
    for part in gather(values):
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def sum_tensor_(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) ``tensor`` in place across ranks; CPU tensors take a trip to the GPU under NCCL."""
    if not current().enabled:
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu)
        return tensor.copy_(on_gpu.cpu())
    dist.all_reduce(tensor)
    return tensor


def everywhere(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank: for a decision all ranks must take the same way (a
    cache hit that skips a collective computation), even if one rank does not see the file yet."""
    return all(gather(bool(flag)))


def barrier() -> None:
    if current().enabled:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def sum_gradients_hook(process_group, bucket):
    """DDP communication hook: all-reduce SUM, not DDP's default mean. Every rank's loss is already
    divided by the example count of the whole global step, so the sum is the global step's gradient."""
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])
