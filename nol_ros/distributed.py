"""Data-parallel training over several processes: ``torch.distributed`` + DDP, launched by
``torchrun``. The one place the three trainers (NOL network ``nol_ros.nol.train``, detector
``nol_ros.recognition.detector``, pose network ``nol_ros.recognition.posenet``) get their
multi-process plumbing from.

    torchrun --standalone --nproc_per_node 2 -m nol_ros.nol.train --preset cpu --out runs/x
    torchrun --standalone --nproc_per_node 8 $(which nol-ros) train-detector --workspace ws

A trainer calls :func:`setup` once. In a plain process (no ``WORLD_SIZE`` > 1 in the
environment) it returns :data:`SINGLE` and every helper below is the identity: the
single-process path runs exactly the code it ran before this module existed. Under torchrun it
joins the process group (backend ``gloo`` on the CPU, ``nccl`` for CUDA devices -- the choice on
GPUs; ``NOL_DIST_BACKEND`` overrides) and the trainer then

- keeps its *global* batch: every rank builds the same global batch (same data order, same
  augmentation draws: the random streams are not split) and trains on its own slice of it
  (:meth:`DistContext.shard`); DDP averages the gradients, so with equal slices a step is the
  single-process step up to float summation order and BatchNorm statistics, which are taken per
  rank (``SyncBatchNorm`` needs CUDA; on GPUs pass ``sync_bn=True`` to :meth:`DistContext.wrap`).
  The price: data preparation is repeated on every rank (measured in BENCHMARKS.md);
- writes checkpoints, logs and reports on rank 0 only (:attr:`DistContext.is_main`), in the
  single-process format (the DDP wrapper is stripped, BatchNorm running statistics are averaged
  over the ranks first), so the single-process code loads them;
- takes every decision that ends a loop (time budget) on all ranks together
  (:meth:`DistContext.agree`), so no rank waits for a collective the others left.

Resuming reads the checkpoint on every rank: the output folder must be on storage all ranks see
(one machine, or a shared file system across hosts).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import warnings
from dataclasses import dataclass

from nol_ros.errors import ConfigError

BACKEND_ENV = "NOL_DIST_BACKEND"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel job: rank in [0, world_size), its local
    rank on its host (the GPU it uses), the backend. world_size 1 = a plain process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- data ------------------------------------------------------------------------------
    def shard(self, items):
        """This rank's slice of one global batch (contiguous, sizes differing by at most one;
        the whole batch when single). Works on lists, tuples, numpy arrays, tensors."""
        if not self.enabled:
            return items
        n = len(items)
        lo = self.rank * n // self.world_size
        hi = (self.rank + 1) * n // self.world_size
        return items[lo:hi]

    def weight(self, n_local: int, n_global: int) -> float:
        """Factor on a rank's mean loss over its ``n_local`` of ``n_global`` samples so that the
        average DDP takes over ranks equals the mean over the global batch."""
        return n_local * self.world_size / max(1, n_global)

    # -- model -----------------------------------------------------------------------------
    def wrap(self, module, device=None, sync_bn: bool = False, find_unused: bool = False):
        """``module`` in DistributedDataParallel (``module`` itself when single). Buffers are not
        broadcast at every forward (each rank keeps its BatchNorm statistics;
        :meth:`sync_buffers` averages them before a checkpoint)."""
        if not self.enabled:
            return module
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        dev = torch.device(device) if device is not None else None
        ids = [dev.index if dev.index is not None else self.local_rank] \
            if dev is not None and dev.type == "cuda" else None
        with warnings.catch_warnings():  # broadcast_buffers=False: no sync at init nor forward
            warnings.simplefilter("ignore", FutureWarning)
            return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                           find_unused_parameters=find_unused)

    def no_sync(self, model, skip: bool):
        """Inside: backward passes accumulate gradients locally (the microsteps of gradient
        accumulation); the first backward outside synchronises the sum. A null context when
        single or when ``skip`` is False."""
        if self.enabled and skip and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()

    def sync_buffers(self, model) -> None:
        """Average floating-point buffers (BatchNorm running mean / variance) over the ranks;
        integer buffers (batch counters) are the same everywhere and stay."""
        if not self.enabled:
            return
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for b in unwrap(model).buffers():
                if b.is_floating_point():
                    dist.all_reduce(b, op=dist.ReduceOp.SUM)
                    b.div_(self.world_size)

    # -- collectives -------------------------------------------------------------------------
    def mean(self, value: float, weight: float = 1.0) -> float:
        """Weighted mean of a number over the ranks (the number itself when single)."""
        if not self.enabled:
            return value
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch
        import torch.distributed as dist

        t = torch.tensor([value * weight, weight], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t[0] / t[1])

    def sum(self, value: float) -> float:
        """Sum of a number over the ranks (the number itself when single)."""
        if not self.enabled:
            return value
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (a loop every rank leaves together)."""
        if not self.enabled:
            return flag
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            # lazy: torch (~2 s) to import, loaded only when this runs
            import torch.distributed as dist

            dist.barrier()

    def device(self, device: str | None) -> str | None:
        """The device of this rank: ``cuda`` -> ``cuda:LOCAL_RANK`` in a distributed job."""
        if self.enabled and device is not None and str(device) == "cuda":
            return f"cuda:{self.local_rank}"
        return device


SINGLE = DistContext()


def loss_module(model, loss_fn):
    """An ``nn.Module`` whose forward is ``loss_fn(model, *args)`` (a dict of loss tensors), to
    wrap in DDP when a training step calls several methods of ``model`` (DDP only sees what runs
    inside one ``forward``). ``forward(None)`` returns ``{"total": 0 * sum of the parameters}``:
    a rank with no sample in an accumulation window still joins the gradient average."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    class _LossModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            if len(args) == 1 and args[0] is None:
                return {"total": sum(p.sum() for p in self.model.parameters()
                                     if p.requires_grad) * 0.0}
            return loss_fn(self.model, *args)

    return _LossModule()


def unwrap(model):
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return getattr(model, "module", model)


def env_context() -> DistContext:
    """The context torchrun's environment describes (RANK, WORLD_SIZE, LOCAL_RANK), without
    joining anything; :data:`SINGLE` outside torchrun."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"torchrun environment is malformed ({e}); launch with torchrun") \
            from e
    if world <= 1:
        return SINGLE
    if not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} outside WORLD_SIZE {world}; launch with torchrun")
    return DistContext(rank, world, local, "")


def choose_backend(device: str | None) -> str:
    """``nccl`` for CUDA devices (the GPU choice), ``gloo`` for the CPU; the environment
    variable NOL_DIST_BACKEND wins."""
    b = os.environ.get(BACKEND_ENV, "").strip()
    if b:
        return b
    return "nccl" if device is not None and str(device).startswith("cuda") else "gloo"


def setup(device: str | None = None) -> DistContext:
    """Join the torchrun job this process belongs to (once; later calls return the same
    context) or return :data:`SINGLE`. ``device``: the trainer's device ("cpu", "cuda", ...),
    which picks the backend."""
    ctx = env_context()
    if not ctx.enabled:
        return SINGLE
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = choose_backend(device)
        if backend == "nccl":
            # lazy: torch (~2 s) to import, loaded only when this runs
            import torch

            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
        atexit.register(_leave_together)
    if dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
        raise ConfigError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                          f"disagrees with the environment (rank {ctx.rank} of "
                          f"{ctx.world_size})")
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, dist.get_backend())


def _leave_together() -> None:
    """At exit: wait for every rank, then close the process group. A rank that exits while
    another still holds its gloo connections dies with "terminate called without an active
    exception" (SIGABRT), and torchrun reports the whole job failed (1 run in 4 of the sharded
    render, measured)."""
    # lazy: torch is loaded already when this runs (setup imported it)
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):  # a rank that died or hangs: leave after 60 s
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            else:
                dist.barrier()
        dist.destroy_process_group()


def current() -> DistContext:
    """The context of the process group this process joined (:data:`SINGLE` when none)."""
    try:
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always has it here
        return SINGLE
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
