"""Soft-target distillation loss for classifier students (Hinton, Vinyals, Dean 2015, "Distilling
the Knowledge in a Neural Network", arXiv 1503.02531, Sec. 2).

Per example, with student logits ``z``, hard label ``y``, the teacher's label distribution ``p``
and temperature ``T``::

    loss = alpha * CE(z, y) + (1 - alpha) * T^2 * KL(p_T || softmax(z / T))
    p_T  = p^(1/T) / sum_k p_k^(1/T)

``p`` is the teacher's probability over the label set: the softmax of the label log-likelihoods
(``teachers.base.normalize_options``), so ``p_T`` is the softmax of those log-likelihoods divided by
``T``; ``T > 1`` flattens both distributions. The ``T^2`` keeps the soft term's gradients on the
scale of the hard term's as ``T`` changes (Hinton et al.). The hard term is taken at ``T = 1``.

``alpha`` follows ``student.targets``: ``hard`` 1, ``soft`` 0, ``mix`` ``1 - student.soft_weight``.
An example without a teacher distribution (a gold example, a label relabeled by a student) gets
the plain hard cross-entropy ``CE(z, y)`` whatever the setting.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

TARGETS = ("hard", "soft", "mix")


def hard_weight(targets: str, soft_weight: float) -> float:
    """``alpha``, the weight of the hard-label term, for ``student.targets`` / ``student.soft_weight``."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS} (got {targets!r})")
    return {"hard": 1.0, "soft": 0.0, "mix": 1.0 - float(soft_weight)}[targets]


def soft_matrix(soft: Sequence[Mapping[str, float] | None], labels: Sequence[str]) -> tuple[Any, Any]:
    """The teacher distributions of a batch as a ``(B, K)`` float tensor in ``labels`` order (rows
    renormalised to sum 1; zeros where an example has none) and a ``(B,)`` bool mask of the rows
    that have one. A label outside ``labels`` or a row without mass is a ``ValueError``."""
    import torch

    known = set(labels)
    rows, mask = [], []
    for i, d in enumerate(soft):
        if d is None:
            rows.append([0.0] * len(labels))
            mask.append(False)
            continue
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"soft target {i}: labels {bad} are not the student's labels {list(labels)}")
        row = [float(d.get(lab, 0.0)) for lab in labels]
        total = sum(row)
        if not total > 0 or any(v < 0 for v in row):
            raise ValueError(f"soft target {i}: {dict(d)} is not a probability distribution")
        rows.append([v / total for v in row])
        mask.append(True)
    return torch.tensor(rows, dtype=torch.float32), torch.tensor(mask, dtype=torch.bool)


def distill_loss(logits: Any, hard: Any, soft: Any = None, has_soft: Any = None, *, temperature: float = 1.0,
                 alpha: float = 1.0) -> Any:
    """Per-example loss ``(B,)`` of the module docstring (per-example weights are applied by the
    caller: :func:`llmkd.students.checkpoint.weighted_epoch`).

    ``logits`` ``(B, K)``; ``hard`` ``(B,)`` class indices; ``soft`` ``(B, K)`` teacher
    probabilities (at T = 1) or None; ``has_soft`` ``(B,)`` bool, the rows of ``soft`` to use
    (default: all of them when ``soft`` is given). Rows without one get ``CE(z, y)``. With
    ``alpha == 1`` or no soft row this is exactly ``F.cross_entropy(logits, hard, reduction="none")``."""
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, hard, reduction="none")
    if soft is None or alpha >= 1.0:
        return ce
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    soft = soft.to(device=logits.device, dtype=logits.dtype)
    has_soft = (torch.ones(len(soft), dtype=torch.bool) if has_soft is None else has_soft).to(logits.device)
    if not bool(has_soft.any()):
        return ce
    t = float(temperature)
    log_q = F.log_softmax(logits / t, dim=-1)
    # p^(1/T) renormalised = softmax(log p / T); a zero probability stays zero (log 0 = -inf)
    p_t = torch.softmax(torch.log(soft.clamp(min=0.0)) / t, dim=-1)
    p_t = torch.where(has_soft.unsqueeze(-1), p_t, torch.zeros_like(p_t))  # rows without soft: no NaN
    kl = F.kl_div(log_q, p_t, reduction="none").sum(-1)  # sum_k p_k (log p_k - log q_k), 0 where p_k = 0
    mixed = alpha * ce + (1.0 - alpha) * (t * t) * kl
    return torch.where(has_soft, mixed, ce)
