"""torch.distributed for the training loops: `train_classifier`, `distill` and `fit_outputs` run unchanged under
`torchrun --nproc_per_node N` (or across nodes).

Every rank draws the same global batch (the same seeded permutation or sampler call as one process) and takes its
own contiguous shard of it; the model is wrapped in DistributedDataParallel, and each rank's loss is scaled so that
DDP's gradient average equals the gradient of the one-process loss over the whole global batch (also for the
last, smaller batch and for losses normalised by a batch-wide denominator). So N processes follow the same
trajectory as one process with the same batch size and learning-rate schedule, up to float rounding; losses are
summed across ranks, so every rank reports the same curve. Progress bars show on rank 0 only.

`sensitivity` splits its jobs across the ranks instead (each job trains alone on its rank, inside `alone()`) and
gathers one table. Results travel between ranks as JSON in tensors, never pickled.

Not reproduced exactly: batch norm in train mode normalises each rank's shard by its own statistics (as DDP
does everywhere).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, batch: tuple, rows: int) -> tuple:
        """This rank's contiguous part of each tensor of a global batch of `rows` rows."""
        if not self.active:
            return batch
        if rows < self.size:
            raise ConfigError(f"a global batch of {rows} rows cannot be split across {self.size} ranks; give a "
                              f"batch size of at least {self.size}")
        k = torch.tensor_split(torch.arange(rows), self.size)[self.rank]
        lo, hi = int(k[0]), int(k[-1]) + 1
        return tuple(t[lo:hi] for t in batch)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """`x` summed over the ranks (a detached copy; x itself when alone)."""
        if not self.active:
            return x
        import torch.distributed as dist

        y = x.detach().clone()
        dist.all_reduce(y)
        return y

    def broadcast(self, params: list[torch.Tensor]) -> None:
        """Rank 0's values everywhere (what DDP does at construction, for loops that do without it)."""
        if self.active:
            import torch.distributed as dist

            for p in params:
                dist.broadcast(p.data, 0)

    def average_grads(self, params: list[torch.Tensor]) -> None:
        if self.active:
            import torch.distributed as dist

            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.size

    def gather_json(self, obj) -> list:
        """Every rank's `obj` (JSON-serialisable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(data)]))
        most = int(max(s.item() for s in sizes))
        bufs = [torch.zeros(most, dtype=torch.uint8) for _ in range(self.size)]
        dist.all_gather(bufs, torch.cat([data, torch.zeros(most - len(data), dtype=torch.uint8)]))
        return [json.loads(bytes(b[:int(s.item())].tolist())) for b, s in zip(bufs, sizes)]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)


_ALONE = contextvars.ContextVar("adntn_alone", default=False)


@contextlib.contextmanager
def alone():
    """Within it, the training loops run as one process, whatever the process group (a rank's own job)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def world() -> World:
    """The process group this process belongs to: an initialised one, or one initialised from torchrun's
    environment (gloo on CPU, NCCL when CUDA is available); a single process otherwise (and inside `alone`)."""
    import torch.distributed as dist

    if not dist.is_available() or _ALONE.get():
        return World()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def scaled(w: World, total: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A loss `total / weight` over the global batch, of which this rank holds a shard: (what this rank
    back-propagates, so that DDP's average is the one-process gradient; the global loss's value)."""
    g_weight = w.sum(weight.detach())
    value = float(w.sum(total.detach()) / g_weight)
    return total / g_weight * w.size, value
