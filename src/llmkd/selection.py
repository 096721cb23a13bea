"""Which pseudo-labels a student trains on, and with what weight: one interface, five strategies.

Every strategy is a :class:`Selector`. It gets a :class:`SelectionInput` (the pseudo-labels
``ŷ_i``, the teacher's confidence ``c_i`` in each, and optionally the student's current class
probabilities) and returns a :class:`Selection`: a keep-mask and a weight in ``[0, 1]`` per
example, plus a JSON-able record of what it decided. Any method can use them; ``methods/llkd.py``
is the training loop that calls them every step or every epoch.

====================  ===================================================  ==================
strategy (name)       keeps                                                needs the student
====================  ===================================================  ==================
``keep_all``          everything, weight 1                                 no
``fixed``             ``c_i >= teacher`` (and ``u_i >= student`` if set)   only if ``student``
``topk``              the ``fraction`` (or ``size``) most confident        no
``random``            a seeded random subset of the same size              no
``llkd``              ``c_i >= τ^T_t(ŷ_i)`` AND ``u_i >= τ^S_t(ŷ_i)``      yes
====================  ===================================================  ==================

LLKD (Li et al., "Learning with Less", Findings of NAACL 2025, arXiv 2411.08028, Sec. 3):
teacher confidence ``c_i`` and student need ``u_i`` (entropy of the student's prediction) are
each compared with a class-wise threshold that follows training through moving averages. The
paper's Section 3 could not be read here (only its abstract and secondary summaries), so the exact
update below is the FreeMatch-style *proposal* of ``docs/methods/llkd.md`` (FreeMatch: Wang et al.
2023, Eq. 5-7), applied once per signal ``s ∈ {c, u}``::

    τ_t      = λ τ_{t-1}    + (1-λ) mean_{i in batch} s_i                   (global level)
    m_t(y)   = λ m_{t-1}(y) + (1-λ) mean_{i in batch, ŷ_i = y} s_i           (class level)
    τ_t(y)   = m_t(y) / max_y' m_t(y') · τ_t                                (class threshold)
    keep i   ⇔ c_i ≥ τ^T_t(ŷ_i)  and  u_i ≥ τ^S_t(ŷ_i)
    w_i      = c_i · u_i / log C                                            (in [0, 1])

Not handled: multi-label examples; strategies that need gradients or embeddings (e.g. core-sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

STRATEGIES = ("keep_all", "fixed", "topk", "random", "llkd")


@dataclass(frozen=True)
class SelectionInput:
    """What a selector sees for a set of pseudo-labeled examples (a mini-batch or the whole pool).

    ``labels``: the pseudo-label ``ŷ_i`` of each example (a class name in ``classes``);
    ``confidence``: the teacher's probability ``c_i`` of that label, in [0, 1];
    ``student_probs``: the student's class probabilities, shape (n, len(classes)), or ``None``.
    """

    labels: Sequence[str]
    confidence: np.ndarray
    classes: tuple[str, ...]
    student_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        c = np.asarray(self.confidence, dtype=np.float64)
        object.__setattr__(self, "confidence", c)
        if c.shape != (n,):
            raise ValueError(f"SelectionInput: {n} labels but confidence has shape {c.shape}")
        if n and (np.isnan(c).any() or c.min() < 0 or c.max() > 1):
            raise ValueError("SelectionInput: teacher confidence must lie in [0, 1] (got values outside, or NaN)")
        unknown = sorted(set(self.labels) - set(self.classes))
        if unknown:
            raise ValueError(f"SelectionInput: labels {unknown[:5]} are not in the classes {list(self.classes)}")
        if self.student_probs is not None:
            p = np.asarray(self.student_probs, dtype=np.float64)
            object.__setattr__(self, "student_probs", p)
            if p.shape != (n, len(self.classes)):
                raise ValueError(f"SelectionInput: student_probs must have shape {(n, len(self.classes))}, got {p.shape}")

    @property
    def class_index(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[y] for y in self.labels], dtype=np.int64)


@dataclass(frozen=True)
class Selection:
    """``keep[i]``: train on example i; ``weights[i]`` in [0, 1] (0 where not kept)."""

    keep: np.ndarray
    weights: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    def kept_per_class(self, inp: SelectionInput) -> dict[str, int]:
        idx = inp.class_index[self.keep]
        return {c: int((idx == i).sum()) for i, c in enumerate(inp.classes)}


@runtime_checkable
class Selector(Protocol):
    name: str
    needs_student: bool

    def select(self, inp: SelectionInput) -> Selection: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """``H(p) / log C`` per row, in [0, 1] (the student's need ``u_i`` when normalised)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return entropy(p) / math.log(p.shape[1])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats per row."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


LOSS_NORMS = ("kept", "batch")


def loss_weights(sel: Selection, norm: str = "kept", drawn: int | None = None) -> list[float]:
    """The kept examples' weights for a student whose loss is ``Σ w'_i CE_i / n_kept``.

    ``norm="kept"``: rescaled to mean 1, so the loss is ``Σ w_i CE_i / Σ w_i`` (the proposal's
    normalised L_w: every step has the same size, however few examples it keeps).
    ``norm="batch"``: ``w_i · n_kept / drawn``, so the loss is ``Σ_kept w_i CE_i / drawn`` with
    ``drawn`` the examples the step drew, kept or not (default: the kept ones, i.e. the raw
    weights): a batch that keeps 1 of 16 takes a small step (FreeMatch's masked mean)."""
    if norm not in LOSS_NORMS:
        raise ValueError(f"The 'norm' parameter of loss_weights must be one of {list(LOSS_NORMS)}. Got {norm!r}.")
    w = sel.weights[sel.keep]
    if norm == "batch":
        scale = len(w) / (drawn if drawn is not None else max(1, len(w)))
        return [float(x) * scale for x in w]
    total = float(w.sum())
    if total <= 0:
        return [1.0] * len(w)
    return [float(x) * len(w) / total for x in w]


class _Stateless:
    needs_student = False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class KeepAll(_Stateless):
    """Every pseudo-label, weight 1 (vanilla KD)."""

    name = "keep_all"

    def select(self, inp: SelectionInput) -> Selection:
        n = len(inp.labels)
        return Selection(np.ones(n, dtype=bool), np.ones(n), {})


class FixedThreshold(_Stateless):
    """Keep ``c_i >= teacher`` and, if ``student`` is set, ``u_i >= student`` (normalised entropy).
    Weights are 1: a fixed filter, the non-adaptive rival of LLKD."""

    name = "fixed"

    def __init__(self, *, teacher: float = 0.5, student: float | None = None) -> None:
        for what, v in (("teacher", teacher), ("student", student)):
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"The '{what}' threshold of FixedThreshold must lie in [0, 1]. Got {v}.")
        self.teacher = teacher
        self.student = student
        self.needs_student = student is not None

    def select(self, inp: SelectionInput) -> Selection:
        keep = inp.confidence >= self.teacher
        if self.student is not None:
            if inp.student_probs is None:
                raise ValueError("FixedThreshold(student=...) needs student_probs in its input")
            keep &= normalized_entropy(inp.student_probs) >= self.student
        return Selection(keep, keep.astype(np.float64), {"teacher": self.teacher, "student": self.student})


def _subset_size(n: int, fraction: float | None, size: int | None, who: str) -> int:
    if (fraction is None) == (size is None):
        raise ValueError(f"{who} takes exactly one of 'fraction' or 'size'. Got fraction={fraction}, size={size}.")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"The 'fraction' parameter of {who} must lie in (0, 1]. Got {fraction}.")
        return min(n, max(1, round(fraction * n))) if n else 0
    if size is not None and size < 1:
        raise ValueError(f"The 'size' parameter of {who} must be an int >= 1. Got {size}.")
    return min(n, int(size or 0))


class TopConfidence(_Stateless):
    """The ``fraction`` (or ``size``) examples with the highest teacher confidence, weight 1.
    Ties are broken by position (stable sort), so the choice is deterministic."""

    name = "topk"

    def __init__(self, *, fraction: float | None = None, size: int | None = None) -> None:
        _subset_size(1, fraction, size, "TopConfidence")  # validates the arguments
        self.fraction, self.size = fraction, size

    def select(self, inp: SelectionInput) -> Selection:
        n = len(inp.labels)
        k = _subset_size(n, self.fraction, self.size, "TopConfidence")
        keep = np.zeros(n, dtype=bool)
        keep[np.argsort(-inp.confidence, kind="stable")[:k]] = True
        cut = float(inp.confidence[keep].min()) if k else None
        return Selection(keep, keep.astype(np.float64), {"k": k, "confidence_cut": cut})


class RandomSubset(_Stateless):
    """A seeded uniform random subset of ``fraction`` (or ``size``) examples, weight 1. The same
    seed and input size give the same subset, so a static selection is the same every epoch."""

    name = "random"

    def __init__(self, *, fraction: float | None = None, size: int | None = None, seed: int = 0) -> None:
        _subset_size(1, fraction, size, "RandomSubset")
        self.fraction, self.size, self.seed = fraction, size, seed

    def select(self, inp: SelectionInput) -> Selection:
        n = len(inp.labels)
        k = _subset_size(n, self.fraction, self.size, "RandomSubset")
        keep = np.zeros(n, dtype=bool)
        keep[np.random.default_rng(self.seed).permutation(n)[:k]] = True
        return Selection(keep, keep.astype(np.float64), {"k": k, "seed": self.seed})


class LLKDSelector:
    """LLKD's adaptive class-wise thresholds (arXiv 2411.08028, Sec. 3; exact form is the
    FreeMatch-style proposal, see the module docstring and ``docs/methods/llkd.md``).

    Each call of :meth:`select` is one update ``t`` (one mini-batch, or the whole pool once per
    epoch): the moving averages absorb the call's statistics, then the call's examples are
    selected against the *updated* thresholds (FreeMatch's order).

    Parameters (code name: paper symbol):

    - ``momentum``: λ of the moving averages (FreeMatch uses 0.999 over ~10^6 steps).
    - ``entropy``: ``"normalized"`` ``u_i = H/log C`` in [0, 1], or ``"raw"`` ``u_i = H`` in nats.
      The update is scale-equivariant, so the two differ only through the initial student
      threshold ``student_init`` (0.5 in the chosen unit).
    - ``class_norm``: ``"max"`` (``τ_t(y) = m_t(y)/max m_t · τ_t``) or ``"none"`` (``τ_t(y) = τ_t``).
    - ``weighting``: ``"product"`` ``w_i = c_i · H_i/log C`` or ``"none"`` (``w_i = 1``).
    - ``teacher_init`` / ``student_init``: τ_0 and m_0(y) for each signal (default 1/C and 0.5).
    - ``warm_start``: ``"fixed"`` (start from those values) or ``"data"``: the first update sets
      τ and every m(y) to the first batch's means (λ = 0 once; a class absent from it gets the
      batch's global mean), so selection starts at the data's own level (ours, not the paper's).
    """

    name = "llkd"
    needs_student = True

    def __init__(self, *, classes: Sequence[str], momentum: float = 0.99, entropy: str = "normalized",
                 class_norm: str = "max", weighting: str = "product", teacher_init: float | None = None,
                 student_init: float | None = None, warm_start: str = "fixed") -> None:
        if len(classes) < 2:
            raise ValueError(f"LLKDSelector needs at least 2 classes. Got {list(classes)}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"The 'momentum' parameter of LLKDSelector must lie in [0, 1). Got {momentum}.")
        for pname, value, allowed in (("entropy", entropy, ("normalized", "raw")), ("class_norm", class_norm, ("max", "none")),
                                      ("weighting", weighting, ("product", "none")),
                                      ("warm_start", warm_start, ("fixed", "data"))):
            if value not in allowed:
                raise ValueError(f"The '{pname}' parameter of LLKDSelector must be one of {list(allowed)}. Got {value!r}.")
        self.classes = tuple(classes)
        self.momentum = momentum
        self.entropy = entropy
        self.class_norm = class_norm
        self.weighting = weighting
        self.warm_start = warm_start
        if warm_start == "data" and (teacher_init is not None or student_init is not None):
            raise ValueError("LLKDSelector: teacher_init / student_init set the fixed start; warm_start='data' "
                             "takes the first batch's means instead. Give one or the other.")
        n_cls = len(self.classes)
        self.teacher_init = 1.0 / n_cls if teacher_init is None else float(teacher_init)
        self.student_init = 0.5 if student_init is None else float(student_init)
        # learned state (trailing underscore): global levels τ_t and class levels m_t(y), per signal
        self.tau_teacher_ = self.teacher_init
        self.tau_student_ = self.student_init
        self.m_teacher_ = np.full(n_cls, self.teacher_init)
        self.m_student_ = np.full(n_cls, self.student_init)
        self.updates_ = 0

    # -- the two signals ----------------------------------------------------------------------
    def need(self, probs: np.ndarray) -> np.ndarray:
        """Student need ``u_i``: entropy of the student's prediction (normalised or raw)."""
        return normalized_entropy(probs) if self.entropy == "normalized" else entropy(probs)

    # -- thresholds ---------------------------------------------------------------------------
    def _class_thresholds(self, tau: float, m: np.ndarray) -> np.ndarray:
        if self.class_norm == "none":
            return np.full(len(m), tau)
        top = float(m.max())
        return m / top * tau if top > 0 else np.full(len(m), tau)

    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """(τ^T_t(y), τ^S_t(y)) for every class, in ``classes`` order."""
        return (self._class_thresholds(self.tau_teacher_, self.m_teacher_),
                self._class_thresholds(self.tau_student_, self.m_student_))

    def update(self, class_index: np.ndarray, c: np.ndarray, u: np.ndarray) -> None:
        """One EMA step of both signals from one batch (all its examples, kept or not)."""
        lam = 0.0 if self.warm_start == "data" and self.updates_ == 0 else self.momentum
        if len(c) == 0:
            return
        if self.warm_start == "data" and self.updates_ == 0:  # warm start from data: absent classes start at the global mean
            self.m_teacher_[:] = float(c.mean())
            self.m_student_[:] = float(u.mean())
        self.tau_teacher_ = lam * self.tau_teacher_ + (1 - lam) * float(c.mean())
        self.tau_student_ = lam * self.tau_student_ + (1 - lam) * float(u.mean())
        for y in np.unique(class_index):  # classes absent from the batch keep their level
            mask = class_index == y
            self.m_teacher_[y] = lam * self.m_teacher_[y] + (1 - lam) * float(c[mask].mean())
            self.m_student_[y] = lam * self.m_student_[y] + (1 - lam) * float(u[mask].mean())
        self.updates_ += 1

    def select(self, inp: SelectionInput, *, update: bool = True) -> Selection:
        if inp.student_probs is None:
            raise ValueError("LLKDSelector needs the student's probabilities (student_probs) in its input")
        if tuple(inp.classes) != self.classes:
            raise ValueError(f"LLKDSelector was built for classes {list(self.classes)}, got {list(inp.classes)}")
        y = inp.class_index
        c = inp.confidence
        u = self.need(inp.student_probs)
        if update:
            self.update(y, c, u)
        tau_t, tau_s = self.thresholds()
        keep = (c >= tau_t[y]) & (u >= tau_s[y])
        if self.weighting == "product":
            w = c * normalized_entropy(inp.student_probs)
        else:
            w = np.ones(len(c))
        w = np.where(keep, np.clip(w, 0.0, 1.0), 0.0)
        return Selection(keep, w, {
            "tau_teacher": self.tau_teacher_, "tau_student": self.tau_student_,
            "teacher_thresholds": dict(zip(self.classes, map(float, tau_t))),
            "student_thresholds": dict(zip(self.classes, map(float, tau_s))),
        })

    # -- persistence (JSON) --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"tau_teacher": self.tau_teacher_, "tau_student": self.tau_student_,
                "m_teacher": self.m_teacher_.tolist(), "m_student": self.m_student_.tolist(),
                "updates": self.updates_, "classes": list(self.classes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("classes") != list(self.classes):
            raise ValueError(f"selector state is for classes {state.get('classes')}, not {list(self.classes)}")
        self.tau_teacher_ = float(state["tau_teacher"])
        self.tau_student_ = float(state["tau_student"])
        self.m_teacher_ = np.asarray(state["m_teacher"], dtype=np.float64)
        self.m_student_ = np.asarray(state["m_student"], dtype=np.float64)
        self.updates_ = int(state["updates"])


def build_selector(name: str, *, classes: Sequence[str], seed: int = 0, **options: Any) -> Selector:
    """A selector by strategy name (one of :data:`STRATEGIES`) with its keyword options.
    Options that do not apply to the strategy are an error, naming the ones that do."""
    allowed = {
        "keep_all": (),
        "fixed": ("teacher", "student"),
        "topk": ("fraction", "size"),
        "random": ("fraction", "size"),
        "llkd": ("momentum", "entropy", "class_norm", "weighting", "teacher_init", "student_init", "warm_start"),
    }
    if name not in allowed:
        raise ValueError(f"unknown selection strategy {name!r}; allowed values are {list(STRATEGIES)}")
    stray = sorted(k for k, v in options.items() if k not in allowed[name] and v is not None)
    if stray:
        raise ValueError(f"selection strategy {name!r} takes {list(allowed[name]) or 'no options'}; got also {stray}")
    kw = {k: v for k, v in options.items() if k in allowed[name] and v is not None}
    if name == "keep_all":
        return KeepAll()
    if name == "fixed":
        return FixedThreshold(**kw)
    if name == "topk":
        return TopConfidence(**kw)
    if name == "random":
        return RandomSubset(seed=seed, **kw)
    return LLKDSelector(classes=classes, **kw)


__all__ = ["STRATEGIES", "SelectionInput", "Selection", "Selector", "KeepAll", "FixedThreshold", "TopConfidence",
           "RandomSubset", "LLKDSelector", "build_selector", "entropy", "normalized_entropy", "loss_weights", "LOSS_NORMS"]
