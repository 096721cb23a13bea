"""Students on many devices: ``accelerate launch --num_processes N -m llmkd run CONFIG``.

Accelerate starts N processes (``WORLD_SIZE`` > 1 in their environment); :class:`accelerate.PartialState`
joins them into one process group (gloo on CPUs, NCCL on GPUs) and gives each its device. Then:

* **Training is data-parallel.** Every process builds the same student (same seed) and walks the
  same shuffled order; of each mini-batch it computes the loss of every N-th example
  (:func:`share`), and before the optimizer step the gradients are summed over the processes
  (:func:`sum_gradients`, one all-reduce of all gradients and the loss). So every process takes
  the same step, the step of the whole mini-batch: ``student.batch_size`` stays the global batch,
  and a run on N processes trains what one process trains (up to float rounding and dropout masks).
* **The teacher is asked once, on the main process** (:class:`MainProcessTeacher`): it labels
  through its cache as a single process would, the others wait and get its answers (and its
  errors) broadcast. No other process opens the cache, so its SQLite WAL is never shared over a
  network file system, and no other process loads the teacher.
* **Only the main process writes the run folder.** The others work in a private scratch copy of it
  (:func:`private_run_dir`, made after the main process started or resumed it, removed at exit), so
  every process sees the same finished methods and checkpoints and takes the same path.

Not handled: prediction on the dev and test sets is not sharded (each process predicts all of
them); gradients are reduced after the backward pass, not overlapped with it as in
``DistributedDataParallel`` (whose wrapper the students' own forward calls would bypass);
``llmkd label`` and the other commands run on one process (use ``--executor ray`` to spread labeling).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .errors import require

log = logging.getLogger(__name__)
T = TypeVar("T")


def world_size() -> int:
    """Processes in this run (``WORLD_SIZE``, set by ``accelerate launch`` / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def active() -> bool:
    return world_size() > 1


@lru_cache(maxsize=None)
def _state() -> Any:
    accelerate = require("accelerate", "hf", f"a data-parallel run on {world_size()} processes (accelerate launch)")
    state = accelerate.PartialState()
    log.info("data-parallel: process %d of %d on %s", state.process_index, state.num_processes, state.device)
    return state


def rank() -> int:
    return _state().process_index if active() else 0


def is_main() -> bool:
    return rank() == 0


def device() -> str:
    """This process's device (``cuda:<local rank>`` or ``cpu``)."""
    return str(_state().device)


def share(idx: Sequence[int]) -> list[int]:
    """This process's part of the mini-batch ``idx``: every N-th index, from its rank (all when alone)."""
    return list(idx[rank()::world_size()]) if active() else list(idx)


def sum_gradients(model: Any, loss: float) -> float:
    """Sum every parameter's gradient, and ``loss``, over the processes (in place); returns the
    summed loss. A parameter with no gradient here (this process had no example) counts as 0; one
    that no process gave a gradient keeps none, as in a single process. Alone: ``loss``."""
    if not active():
        return loss
    import torch
    from accelerate.utils import reduce

    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=dev, dtype=p.dtype)
                      for p in params]
                     + [torch.tensor([float(p.grad is not None) for p in params], device=dev, dtype=params[0].dtype),
                        torch.tensor([loss], device=dev, dtype=params[0].dtype)])
    flat = reduce(flat, reduction="sum")
    offset = 0
    for p in params:
        n = p.numel()
        part = flat[offset:offset + n].view_as(p)
        if p.grad is not None:
            p.grad.copy_(part)
        else:
            p.grad = part.clone()
        offset += n
    for p, had in zip(params, flat[offset:offset + len(params)].tolist()):
        if not had:
            p.grad = None
    return float(flat[-1])


def _pack_error(exc: BaseException) -> tuple[Any, ...]:
    """An exception as (class, args, attributes): llmkd's errors take other arguments than their
    message, so pickle cannot rebuild them from their args alone."""
    return type(exc), exc.args, dict(getattr(exc, "__dict__", {}))


def _unpack_error(packed: tuple[Any, ...]) -> BaseException:
    cls, args, attrs = packed
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *args)
    exc.__dict__.update(attrs)
    return exc


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on the main process, its result (or its exception) given to every process;
    the others wait. Alone: ``fn()``."""
    if not active():
        return fn()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - handed to every process, then raised everywhere
            box[0] = ("error", _pack_error(exc))
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if kind == "error":
        raise _unpack_error(value)
    return value


class MainProcessTeacher:
    """The run's teacher in a data-parallel run: every call and attribute is answered on the main
    process (by its :class:`~llmkd.teachers.cache.CachedTeacher`, built there on first use by
    ``build``) and broadcast to the others, which wait. All processes make the same calls in the
    same order (they run the same code on the same data), so each call is one broadcast."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._teacher: Any = None

    def _local(self) -> Any:
        if self._teacher is None:
            self._teacher = self._build()
        return self._teacher

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> Any:
        return on_main(lambda: self._local().generate(prompts, **kwargs))

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> Any:
        return on_main(lambda: self._local().score_options(prompts, options))

    def count_tokens(self, text: str) -> int:
        return on_main(lambda: self._local().count_tokens(text))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return on_main(lambda: getattr(self._local(), name))


def private_run_dir(run_dir: Path) -> Path:
    """Where this process writes the run: ``run_dir`` on the main process; on the others a scratch
    copy of it (model weights hard-linked where the file system allows: they are never changed in
    place, only replaced), made after the main process has started it, removed at exit."""
    if not active():
        return run_dir
    on_main(lambda: None)  # the main process has started (or resumed) run_dir before anyone copies it
    if is_main():
        on_main(lambda: None)  # and waits for the copies
        return run_dir
    scratch = Path(tempfile.mkdtemp(prefix=f"llmkd-rank{rank()}-"))
    atexit.register(shutil.rmtree, scratch, True)

    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith(".safetensors"):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    copy = scratch / run_dir.name
    try:
        shutil.copytree(run_dir, copy, copy_function=link_or_copy)
    finally:
        on_main(lambda: None)  # the main process writes on once every copy is made
    log.info("data-parallel: process %d works in a copy of %s (%s); only the main process writes the run", rank(),
             run_dir, copy)
    return copy
