"""Student checkpoints shared by every student: weights (safetensors) + tokenizer via
``save_pretrained``, ``student.json`` (hyperparameters and progress) and
``optimizer.safetensors`` (AdamW moments and torch's random generator state, so a resumed run
continues exactly: the same dropout masks, the same steps, bit-identical predictions). A
checkpoint is written to a temporary folder and swapped in, so a kill -9 never leaves a
half-written one (a temporary folder left by a kill is removed by the next write)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import StateError


def write_checkpoint(path: str | Path, student: Any, meta: dict[str, Any]) -> None:
    """Save ``student.model_`` / ``tokenizer_`` / ``optimizer_`` and ``meta`` (plus its progress
    counters) to ``path``, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    import torch

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a temporary folder left by a kill during an earlier write
    tmp.mkdir(parents=True, exist_ok=True)
    student.model_.save_pretrained(tmp, safe_serialization=True)
    student.tokenizer_.save_pretrained(tmp)
    tensors, opt_meta = optimizer_tensors(student.model_, student.optimizer_)
    tensors[RNG_KEY] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {**meta, "epochs_done": student.epochs_done_, "steps_done": student.steps_done_, "optimizer": opt_meta}
    (tmp / "student.json").write_text(json.dumps(meta, indent=1))
    if path.exists():
        old = path.with_name(path.name + ".old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def drop_optimizer_state(folder: str | Path) -> int:
    """Delete every ``optimizer.safetensors`` below ``folder``; returns the bytes freed.

    The AdamW moments are twice the weights (MiniLM: 180 MB next to 90 MB) and only serve to
    resume training; once a method has written its result it is never trained again, so its
    students are kept as weights + tokenizer (loadable, for prediction or export) without them."""
    freed = 0
    for f in Path(folder).rglob("optimizer.safetensors"):
        freed += f.stat().st_size
        meta_path = f.parent / "student.json"
        if meta_path.exists():  # says the file is gone on purpose (restore_progress then does not complain)
            meta = json.loads(meta_path.read_text())
            meta_path.write_text(json.dumps({**meta, "optimizer_dropped": True}, indent=1))
        f.unlink()
    for tmp in Path(folder).rglob("*.tmp"):  # checkpoint writes a kill interrupted
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
    return freed


def read_meta(path: str | Path) -> dict[str, Any]:
    """``student.json`` of the checkpoint at ``path``; a :class:`StateError` naming it when it is
    missing or unreadable."""
    f = Path(path) / "student.json"
    try:
        return json.loads(f.read_text())
    except FileNotFoundError as exc:
        raise StateError(f"{f} is missing: {path} is not a complete student checkpoint. Delete the folder "
                         f"{Path(path)} and rerun (that student is trained again).") from exc
    except (OSError, ValueError) as exc:
        raise StateError(f"{f} is unreadable ({exc}). Delete the folder {Path(path)} and rerun (that student is "
                         "trained again).") from exc


def load_into(student: Any, path: str | Path, meta: dict[str, Any]) -> None:
    """Build ``student`` from the weights at ``path`` and restore its progress; a
    :class:`StateError` naming the folder when the weights or tokenizer cannot be read."""
    try:
        student._build(source=str(path))
    except Exception as exc:  # noqa: BLE001 - transformers / safetensors raise many types for a bad file
        raise StateError(f"the student checkpoint {path} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}). "
                         f"Delete the folder {Path(path)} and rerun (that student is trained again).") from exc
    restore_progress(student, path, meta)


def restore_progress(student: Any, path: str | Path, meta: dict[str, Any]) -> None:
    """After ``student._build(source=path)``: the epoch / step counters and the optimizer state."""
    from safetensors.torch import load_file

    import torch

    student.epochs_done_ = meta["epochs_done"]
    student.steps_done_ = meta["steps_done"]
    opt_file = Path(path) / "optimizer.safetensors"
    if not opt_file.exists():
        if meta.get("optimizer_dropped") or not meta["steps_done"]:
            return  # a finished student (for prediction only), or one that never trained
        raise StateError(f"{opt_file} is missing, so training cannot resume exactly from {path}. Delete the folder "
                         f"{Path(path)} (that student is then trained again from the start) and rerun.")
    try:
        tensors = load_file(str(opt_file), device=student.device_)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise StateError(f"{opt_file} is unreadable ({exc}). Delete the folder {Path(path)} (that student is then "
                         "trained again from the start) and rerun.") from exc
    rng = tensors.pop(RNG_KEY, None)
    load_optimizer(student.model_, student.optimizer_, tensors, meta["optimizer"])
    if rng is not None:
        torch.set_rng_state(rng.cpu())


RNG_KEY = "__rng__.torch"  #: torch's CPU generator state, stored beside the AdamW moments


class LazyStudent:
    """What every student shares: its torch parts (model, tokenizer, optimizer) are built on first
    use by the subclass's ``_build`` (so a factory call is cheap and a loader can restore into
    them), and its learning rate warms up linearly over ``warmup_steps`` to ``lr``."""

    _built: bool
    lr: float
    warmup_steps: int

    def _build(self) -> None:
        raise NotImplementedError

    def _ensure(self) -> None:
        if not self._built:
            self._build()

    def _lr_at(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr


def adamw(params: Any, lr: float, weight_decay: float) -> Any:
    """Every student's AdamW: torch's fused kernel where the parameters' device has one (on 2 CPU
    cores it steps MiniLM's 22.7M weights in ~17 ms instead of ~98 ms for the default foreach
    kernel, i.e. ~15% of a training step; it is what ``transformers.Trainer`` uses), else the
    default. ``params`` is a list of tensors or of parameter groups."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device (or dtype) without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def optimizer_tensors(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """AdamW state as named tensors (safetensors cannot hold the pickled state_dict)."""
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, Any] = {}
    steps: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            n = names[id(p)]
            tensors[f"{n}.exp_avg"] = state["exp_avg"].detach().contiguous()
            tensors[f"{n}.exp_avg_sq"] = state["exp_avg_sq"].detach().contiguous()
            steps[n] = float(state["step"])
    return tensors, {"steps": steps}


def load_optimizer(model: Any, optimizer: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    import torch

    fused = bool(optimizer.defaults.get("fused"))
    for n, p in model.named_parameters():
        if f"{n}.exp_avg" in tensors:
            optimizer.state[p] = {  # a fused AdamW keeps its step count on the parameter's device
                "step": torch.tensor(meta["steps"][n], dtype=torch.float32, device=p.device if fused else "cpu"),
                "exp_avg": tensors[f"{n}.exp_avg"],
                "exp_avg_sq": tensors[f"{n}.exp_avg_sq"],
            }


def optimizer_step(student: Any, loss: Any) -> float:
    """One AdamW step on ``loss`` at the student's scheduled learning rate (``_lr_at``, times a
    parameter group's ``lr_scale`` where it has one), with gradient clipping at 1.0; counts the
    step and returns the loss. In a data-parallel run (:mod:`llmkd.distributed`) ``loss`` is this
    process's part (None: it had no example of the batch) and the gradients and the returned loss
    are summed over the processes before the step."""
    import torch

    from ..distributed import sum_gradients

    for group in student.optimizer_.param_groups:
        group["lr"] = student._lr_at(student.steps_done_) * group.get("lr_scale", 1.0)
    student.optimizer_.zero_grad(set_to_none=True)
    value = 0.0
    if loss is not None:
        loss.backward()
        value = loss.item()
    value = sum_gradients(student.model_, value)
    torch.nn.utils.clip_grad_norm_(student.model_.parameters(), 1.0)
    student.optimizer_.step()
    student.steps_done_ += 1
    return value


def weighted_epoch(student: Any, n: int, weights: Sequence[float] | None, batch_loss: Callable[[list[int]], Any]) -> float:
    """One epoch of every student: the ``n`` examples in the student's seeded order (``seed``,
    ``epochs_done_``), mini-batches of ``batch_size``; ``batch_loss(idx)`` gives the per-example
    losses of a batch; the step minimises their ``weights``-weighted sum over the batch size.
    Returns the mean loss and counts the epoch. In a data-parallel run each process computes the
    losses of its share of every batch (:func:`llmkd.distributed.share`)."""
    import torch

    from ..distributed import share

    if weights is not None and len(weights) != n:
        raise ValueError(f"fit_epoch: {n} examples but {len(weights)} weights")
    order = list(range(n))
    random.Random(student.seed * 1000 + student.epochs_done_).shuffle(order)
    student.model_.train()
    total, count = 0.0, 0
    for start in range(0, n, student.batch_size):
        idx = order[start : start + student.batch_size]
        mine = share(idx)
        loss = None
        if mine:
            per_example = batch_loss(mine)
            w = torch.tensor([1.0 if weights is None else float(weights[i]) for i in mine], device=per_example.device)
            loss = (per_example * w).sum() / len(idx)
        total += optimizer_step(student, loss) * len(idx)
        count += len(idx)
    student.epochs_done_ += 1
    return total / max(count, 1)
