"""Student checkpoints shared by every student: weights (safetensors) + tokenizer via
``save_pretrained``, ``student.json`` (hyperparameters and progress) and
``optimizer.safetensors`` (AdamW moments, so a resumed run continues exactly). A checkpoint is
written to a temporary folder and swapped in, so a kill -9 never leaves a half-written one."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence


def write_checkpoint(path: str | Path, student: Any, meta: dict[str, Any]) -> None:
    """Save ``student.model_`` / ``tokenizer_`` / ``optimizer_`` and ``meta`` (plus its progress
    counters) to ``path``, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    student.model_.save_pretrained(tmp, safe_serialization=True)
    student.tokenizer_.save_pretrained(tmp)
    tensors, opt_meta = optimizer_tensors(student.model_, student.optimizer_)
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
        f.unlink()
    return freed


def read_meta(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "student.json").read_text())


def restore_progress(student: Any, path: str | Path, meta: dict[str, Any]) -> None:
    """After ``student._build(source=path)``: the epoch / step counters and the optimizer state."""
    from safetensors.torch import load_file

    student.epochs_done_ = meta["epochs_done"]
    student.steps_done_ = meta["steps_done"]
    opt_file = Path(path) / "optimizer.safetensors"
    if opt_file.exists():
        load_optimizer(student.model_, student.optimizer_, load_file(str(opt_file), device=student.device_),
                       meta["optimizer"])


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

    for n, p in model.named_parameters():
        if f"{n}.exp_avg" in tensors:
            optimizer.state[p] = {
                "step": torch.tensor(meta["steps"][n]),
                "exp_avg": tensors[f"{n}.exp_avg"],
                "exp_avg_sq": tensors[f"{n}.exp_avg_sq"],
            }


def optimizer_step(student: Any, loss: Any) -> None:
    """One AdamW step on ``loss`` at the student's scheduled learning rate (``_lr_at``), with
    gradient clipping at 1.0; counts the step."""
    import torch

    for group in student.optimizer_.param_groups:
        group["lr"] = student._lr_at(student.steps_done_)
    student.optimizer_.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.model_.parameters(), 1.0)
    student.optimizer_.step()
    student.steps_done_ += 1


def weighted_epoch(student: Any, n: int, weights: Sequence[float] | None, batch_loss: Callable[[list[int]], Any]) -> float:
    """One epoch of every student: the ``n`` examples in the student's seeded order (``seed``,
    ``epochs_done_``), mini-batches of ``batch_size``; ``batch_loss(idx)`` gives the per-example
    losses of a batch; the step minimises their ``weights``-weighted sum over the batch size.
    Returns the mean loss and counts the epoch."""
    import torch

    if weights is not None and len(weights) != n:
        raise ValueError(f"fit_epoch: {n} examples but {len(weights)} weights")
    order = list(range(n))
    random.Random(student.seed * 1000 + student.epochs_done_).shuffle(order)
    student.model_.train()
    total, count = 0.0, 0
    for start in range(0, n, student.batch_size):
        idx = order[start : start + student.batch_size]
        per_example = batch_loss(idx)
        w = torch.tensor([1.0 if weights is None else float(weights[i]) for i in idx], device=per_example.device)
        loss = (per_example * w).sum() / len(idx)
        optimizer_step(student, loss)
        total += loss.item() * len(idx)
        count += len(idx)
    student.epochs_done_ += 1
    return total / max(count, 1)
