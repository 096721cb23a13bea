"""LLKD: train on the pseudo-labels the teacher is sure of and the student still needs.

Li et al., "Learning with Less: Knowledge Distillation from Large Language Models via Unlabeled
Data", Findings of NAACL 2025 (arXiv 2411.08028). The paper's Sec. 3 (method) could not be read
here; the threshold update is the FreeMatch-style proposal documented in ``docs/methods/llkd.md``
and :mod:`llmkd.selection`. The loop, one commented step per line:

1. the teacher labels the pool once (cached); ``c_i`` = its probability of ``ŷ_i``, normalised
   over the label set (``teacher.confidence: true``); abstentions are left out;
2. every update ``t`` (each mini-batch with ``granularity: step``, the paper's reported choice;
   once per epoch over the whole pool with ``granularity: epoch``):
   a. the student predicts the examples (no gradient) -> need ``u_i`` = entropy of its prediction;
   b. the selector updates the moving-average thresholds τ^T_t(y), τ^S_t(y) from them;
   c. it keeps ``c_i ≥ τ^T_t(ŷ_i)`` and ``u_i ≥ τ^S_t(ŷ_i)``, weight ``w_i = c_i · u_i``;
   d. the student takes a gradient step on the kept examples with loss ``Σ w_i CE_i / Σ w_i``;
3. after every epoch: evaluate on the small gold dev set, keep the best student, stop early after
   ``student.patience`` epochs without gain; record thresholds and selected counts per class;
4. evaluate the best student on the test set; plot the per-epoch record (``plot`` extra).

``selection: keep_all | fixed | topk | random`` swaps the selector and keeps the same loop (the
baselines of the benchmark); strategies that do not look at the student select once, up front.

Resumable: the student, the selector's moving averages and the record are checkpointed together
after every epoch; a killed run restarts the unfinished epoch. Not handled: soft-label (KL)
distillation, per-sample teacher confidence from generated-token logprobs when the label set
cannot be scored (it is used when ``labeling.py`` provides it), non-classification tasks.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import TeacherError
from ..io import read_json, write_json, write_jsonl
from ..labeling import abstention_rate
from ..students.base import ProbaStudent
from ..selection import LLKDSelector, Selection, SelectionInput, build_selector, loss_weights
from ..types import Example, RunResult, TeacherLabel
from .base import RunContext, min_epochs, patience_spent, primary_metric, require_answers

log = logging.getLogger(__name__)


class LLKDOptions(BaseModel):
    """``method_options.llkd`` in a run config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selection: Literal["llkd", "keep_all", "fixed", "topk", "random"] = Field(
        "llkd", description="selection strategy (llmkd.selection); the others are LLKD's baselines")
    granularity: Literal["step", "epoch"] = Field(
        "step", description="update thresholds and select every mini-batch (step) or once per epoch")
    momentum: float | None = Field(
        None, ge=0.0, lt=1.0, description="λ of the moving averages, per step; null = 1 - 1/(steps per epoch)")
    entropy: Literal["normalized", "raw"] = Field("normalized", description="student need: H/log C or H (nats)")
    class_norm: Literal["max", "none"] = Field("max", description="per-class thresholds m(y)/max m · τ, or global τ")
    weighting: Literal["product", "none"] = Field("product", description="loss weight c·u, or 1")
    teacher_init: float | None = Field(None, ge=0.0, le=1.0, description="τ^T_0 (default 1/C)")
    student_init: float | None = Field(None, ge=0.0, description="τ^S_0 (default 0.5)")
    teacher_threshold: float | None = Field(None, ge=0.0, le=1.0, description="selection=fixed: keep c ≥ this")
    student_threshold: float | None = Field(None, ge=0.0, le=1.0, description="selection=fixed: and u ≥ this")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="selection=topk|random: share of the pool")
    plot: bool = Field(True, description="write selection.png (needs the 'plot' extra: matplotlib)")

    @model_validator(mode="after")
    def _fits_strategy(self) -> LLKDOptions:
        if self.selection in ("topk", "random") and self.fraction is None:
            raise ValueError(f"selection={self.selection} needs fraction (the share of the pool to keep), e.g. 0.25")
        if self.selection == "fixed" and self.teacher_threshold is None:
            raise ValueError("selection=fixed needs teacher_threshold (keep c ≥ it), e.g. 0.8")
        if self.fraction is not None and self.selection not in ("topk", "random"):
            raise ValueError(f"fraction applies to selection=topk or random, not {self.selection}")
        if (self.teacher_threshold is not None or self.student_threshold is not None) and self.selection != "fixed":
            raise ValueError(f"teacher_threshold / student_threshold apply to selection=fixed, not {self.selection}")
        return self


def student_probs(student: Any, texts: Sequence[str]) -> np.ndarray:
    """The student's class probabilities (rows in ``student.labels`` order), no gradient."""
    if isinstance(student, ProbaStudent):
        return np.asarray(student.predict_proba(list(texts)), dtype=np.float64)
    preds = student.predict([Example("", t, None) for t in texts])
    if any(not isinstance(p.probs, dict) or not p.probs for p in preds):
        raise TypeError(f"LLKD needs the student's class probabilities: {type(student).__name__} has no "
                        "predict_proba (students.base.ProbaStudent) and its predict() gives no probs")
    return np.array([[p.probs.get(c, 0.0) for c in student.labels] for p in preds], dtype=np.float64)


class LLKD:
    """Teacher-confidence × student-need sample selection (see the module docstring)."""

    name = "llkd"

    def __init__(self, **options: Any) -> None:
        self.options = LLKDOptions.model_validate(options)

    # -- setup ----------------------------------------------------------------------------------
    def step_momentum(self, steps_per_epoch: int) -> float:
        """λ per step: the configured one, else ``1 - 1/steps_per_epoch`` (an EMA horizon of one
        epoch; ≈0.998 at PubMed-RCT-20k scale, close to FreeMatch's 0.999)."""
        if self.options.momentum is not None:
            return self.options.momentum
        return 1.0 - 1.0 / steps_per_epoch if steps_per_epoch > 1 else 0.0

    def _selector(self, classes: Sequence[str], seed: int, steps_per_epoch: int) -> Any:
        o = self.options
        if o.selection == "llkd":
            lam = self.step_momentum(steps_per_epoch)
            momentum = lam if o.granularity == "step" else lam ** steps_per_epoch  # the same horizon in examples
            return LLKDSelector(classes=classes, momentum=momentum, entropy=o.entropy, class_norm=o.class_norm,
                                weighting=o.weighting, teacher_init=o.teacher_init, student_init=o.student_init)
        return build_selector(o.selection, classes=classes, seed=seed, teacher=o.teacher_threshold,
                              student=o.student_threshold, fraction=o.fraction)

    def _train_set(self, ctx: RunContext, labels: list[TeacherLabel]) -> tuple[list[Example], np.ndarray]:
        texts = {u.id: u.text for u in ctx.pool}
        answered = require_answers(labels, ctx.task)
        needs_conf = self.options.selection in ("llkd", "fixed", "topk")
        missing = [lab.example_id for lab in answered if lab.confidence is None]
        if needs_conf and missing:
            raise TeacherError(
                f"selection={self.options.selection} needs the teacher's confidence in each pseudo-label, but "
                f"{len(missing)} of {len(answered)} labels have none (e.g. {missing[0]}). Set teacher.confidence=true "
                "(scores the label set) or use teacher.labeling=score.")
        train = [Example(lab.example_id, texts[lab.example_id], lab.label) for lab in answered]
        conf = np.array([1.0 if lab.confidence is None else lab.confidence for lab in answered], dtype=np.float64)
        return train, np.clip(conf, 0.0, 1.0)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> RunResult:
        from tqdm.auto import tqdm

        o = self.options
        t0 = time.perf_counter()
        labels = ctx.label(ctx.pool, stage="teacher-pool", desc="teacher on pool")            # 1
        label_s = time.perf_counter() - t0
        train, conf = self._train_set(ctx, labels)
        y = [e.label for e in train]
        n, bs = len(train), ctx.train.batch_size
        steps = max(1, math.ceil(n / bs))
        least = min_epochs(n, ctx.train)  # patience waits for them (see fit_student)
        total_epochs = max(ctx.train.epochs, least)
        eval_every = max(1, round(total_epochs / ctx.train.epochs))
        d = ctx.workdir / "llkd"
        d.mkdir(parents=True, exist_ok=True)
        state_path = d / "state.json"
        state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "history": [], "epochs": [],
                                 "trace": [], "ever": [], "first_epoch": {}, "times": {}, "done": False,
                                 "n_train": n, "total_epochs": total_epochs, "last": None, "selector": None}
        if state_path.exists():
            saved = read_json(state_path)
            if saved.get("n_train") == n and (saved["last"] is None or (d / saved["last"]).exists()):
                state = saved
        probe = ctx.student_factory(ctx.seed)
        classes = tuple(probe.labels)
        selector = self._selector(classes, ctx.seed, steps)
        if state["selector"]:
            selector.load_state_dict(state["selector"])
        static: Selection | None = None
        if not selector.needs_student:                                                       # baselines: once
            static = selector.select(SelectionInput(y, conf, classes))
        t1 = time.perf_counter()
        if not state["done"]:
            student = ctx.student_loader(d / state["last"]) if state["last"] else probe
            ever = np.zeros(n, dtype=bool)
            ever[state["ever"]] = True
            bad = sum(1 for h in state["history"] if h["epoch"] > state["best_epoch"])
            bar = tqdm(total=total_epochs * steps, initial=state["epoch"] * steps, desc="training llkd",
                       disable=not ctx.progress, unit="step")
            reason = "max_epochs"
            while state["epoch"] < total_epochs:
                epoch = state["epoch"] + 1
                kept = np.zeros(n, dtype=np.int64)   # times each example was kept this epoch
                losses: list[tuple[float, int]] = []
                last_rec: dict[str, Any] = {}
                if static is not None:                                                        # 2 (static)
                    losses.append(self._step(student, train, np.arange(n), static))
                    kept += static.keep
                    bar.update(steps)
                elif o.granularity == "epoch":                                                # 2 (per epoch)
                    sel = selector.select(SelectionInput(y, conf, classes, student_probs(student, [e.text for e in train])))
                    losses.append(self._step(student, train, np.arange(n), sel))
                    kept += sel.keep
                    last_rec = sel.record
                    state["trace"].append([last_rec["tau_teacher"], last_rec["tau_student"], sel.n_kept / n])
                    bar.update(steps)
                else:                                                                         # 2 (per step)
                    order = np.random.default_rng([ctx.seed, epoch]).permutation(n)
                    for start in range(0, n, bs):
                        idx = order[start:start + bs]
                        probs = student_probs(student, [train[i].text for i in idx])          # 2a
                        sel = selector.select(SelectionInput([y[i] for i in idx], conf[idx], classes, probs))  # 2b, 2c
                        losses.append(self._step(student, train, idx, sel))                  # 2d
                        kept[idx[sel.keep]] += 1
                        last_rec = sel.record
                        state["trace"].append([last_rec["tau_teacher"], last_rec["tau_student"], sel.n_kept / len(idx)])
                        bar.update(1)
                for i in np.flatnonzero(kept):                                                # provenance
                    state["first_epoch"].setdefault(train[i].id, epoch)
                    state["times"][train[i].id] = state["times"].get(train[i].id, 0) + int(kept[i])
                ever |= kept > 0
                n_loss = sum(k for _, k in losses)
                loss = sum(v * k for v, k in losses) / n_loss if n_loss else float("nan")
                rec = {"epoch": epoch, "loss": loss, "selected": int((kept > 0).sum()),
                       "selected_per_class": {c: int(((kept > 0) & (np.array(y) == c)).sum()) for c in classes},
                       "ever_selected": int(ever.sum()), "data_fraction": float(ever.mean())}
                if isinstance(selector, LLKDSelector):
                    tt, ts = selector.thresholds()
                    rec.update(tau_teacher=selector.tau_teacher_, tau_student=selector.tau_student_,
                               teacher_thresholds=dict(zip(classes, map(float, tt))),
                               student_thresholds=dict(zip(classes, map(float, ts))))
                state["epoch"] = epoch
                if epoch % eval_every == 0 or epoch == total_epochs:                          # 3
                    scores = ctx.evaluate(student.predict(ctx.dev), ctx.dev) if ctx.dev else {"loss": -loss}
                    metric = primary_metric(ctx.task, scores)
                    score = float(scores[metric])
                    rec["dev"] = score
                    state["dev_metric"] = metric
                    state["history"].append({"epoch": epoch, "loss": loss, "score": score,
                                             "seconds": time.perf_counter() - t1})
                    if score > state["best_score"]:
                        state["best_score"], state["best_epoch"], bad = score, epoch, 0
                        student.save(d / "best")
                    else:
                        bad += 1
                    bar.set_postfix(kept=f"{rec['selected']}/{n}", dev=f"{score:.3f}")
                state["epochs"].append(rec)
                state["ever"] = np.flatnonzero(ever).tolist()
                state["selector"] = selector.state_dict()
                previous = state["last"]
                student.save(d / f"epoch-{epoch}")
                state["last"] = f"epoch-{epoch}"
                write_json(state_path, state)
                if previous:
                    shutil.rmtree(d / previous, ignore_errors=True)
                if patience_spent(bad, ctx.train.patience, epoch, least, state["history"]):
                    reason = f"no dev gain in {ctx.train.patience} evaluations"
                    break
            bar.close()
            if not (d / "best").exists():  # no evaluation improved on -1 (cannot happen with scores >= 0)
                student.save(d / "best")
            state["done"], state["stop_reason"] = True, reason
            write_json(state_path, state)
        best = ctx.student_loader(d / "best")
        preds = best.predict(ctx.test)                                                        # 4
        self._write_provenance(ctx.workdir / "selection.jsonl", train, conf, state)
        plots = self._plot(state["epochs"], state["trace"], classes, ctx.workdir / "selection.png") if o.plot else []
        ever_n = len(state["ever"])
        record = {k: state[k] for k in ("history", "best_epoch", "best_score", "epoch", "total_epochs")}
        record.update(dev_metric=state.get("dev_metric"), stop_reason=state["stop_reason"])
        return RunResult(
            self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(labels),
            stop_reason=state["stop_reason"],
            timings={"label_seconds": label_s, "train_seconds": time.perf_counter() - t1},
            extra={"training": record, "n_train": ever_n, "pool_answered": n, "data_fraction": ever_n / n,
                   "mean_epoch_fraction": float(np.mean([r["selected"] for r in state["epochs"]]) / n),
                   "options": o.model_dump(), "momentum_per_step": self.step_momentum(steps),
                   "epochs": state["epochs"], "plots": plots,
                   "pool_abstention_rate": abstention_rate(labels)},
        )

    @staticmethod
    def _step(student: Any, train: list[Example], idx: np.ndarray, sel: Selection) -> tuple[float, int]:
        """Train on the kept examples of ``idx`` with weights of mean 1 (loss Σ w CE / Σ w)."""
        if not sel.n_kept:
            return 0.0, 0
        examples = [train[i] for i in idx[sel.keep]]
        return student.fit_epoch(examples, loss_weights(sel)), len(examples)

    @staticmethod
    def _write_provenance(path: Path, train: list[Example], conf: np.ndarray, state: dict[str, Any]) -> None:
        write_jsonl(path, ({"id": e.id, "label": e.label, "confidence": float(c),
                            "first_selected_epoch": state["first_epoch"].get(e.id),
                            "times_selected": state["times"].get(e.id, 0)} for e, c in zip(train, conf)))

    @staticmethod
    def _plot(epochs: list[dict[str, Any]], trace: list[list[float]], classes: Sequence[str], path: Path) -> list[str]:
        """Per-class thresholds and selected counts per epoch -> ``path``; returns the file name
        (relative to the method's folder) for the report, or [] without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.warning("matplotlib is not installed, so no selection plot was drawn; pip install 'llmkd[plot]'")
            return []
        xs = [r["epoch"] for r in epochs]
        has_tau = bool(epochs) and "teacher_thresholds" in epochs[0]
        fig, axes = plt.subplots(1, 3 if has_tau else 1, figsize=(15 if has_tau else 5, 3.6), squeeze=False)
        ax = axes[0]
        for c in classes:
            ax[0].plot(xs, [r["selected_per_class"][c] for r in epochs], marker="o", label=c)
        ax[0].plot(xs, [r["ever_selected"] for r in epochs], "k--", label="ever selected (all)")
        ax[0].set(title="selected per class", xlabel="epoch", ylabel="examples")
        ax[0].legend(fontsize=7)
        if has_tau:
            for j, (key, title) in enumerate((("teacher_thresholds", "teacher threshold τ^T(y)"),
                                              ("student_thresholds", "student threshold τ^S(y)")), start=1):
                for c in classes:
                    ax[j].plot(xs, [r[key][c] for r in epochs], marker="o", label=c)
                ax[j].plot(xs, [r["tau_teacher" if j == 1 else "tau_student"] for r in epochs], "k--", label="global τ")
                ax[j].set(title=title, xlabel="epoch")
                ax[j].legend(fontsize=7)
        from matplotlib.ticker import MaxNLocator

        for a in ax:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path.name]
