"""The teacher gate: before the teacher labels the pool, is it worth distilling from?

:func:`teacher_gate` (called by :func:`llmkd.api.run` before the first method runs) labels the
labeled **dev set** (at most ``teacher.gate_max_dev`` examples of it, the same number per class:
:func:`gate_dev`) with the run's teacher and demonstrations (through the cache, like every
labeling), scores it with the task, trains the **supervised-k student** (the student on the k
gold examples; it is the ``supervised`` method's student, trained in that method's folder so the
method reuses it, or ``RUN_DIR/gate/gate-supervised`` when the run has no ``supervised``) and
estimates what labeling the pool will cost (the teacher's seconds per dev prompt, measured
after the first, times the prompts to come; prompt tokens likewise).

The teacher fails the gate when, on the task's primary metric on dev (classification macro-F1,
NER span F1):

* it is **near chance**: at most the chance level plus the margin. The chance level of a
  classification task is the larger of 1/K (K classes: a uniform guess) and the macro-F1 of always
  answering the dev set's majority class; of NER it is 0 (no entities);
* it is **below the supervised-k student** by more than the margin.

The **margin** is the larger of :data:`MARGIN` (0.05) and one dev example (1/n): dev sets are tiny
(8 per class by default, 16 examples for two classes, where one example moves accuracy by 0.06),
and the student's dev score is optimistic (early stopping picked its epoch on the same dev set).
So only a gap of more than about one dev example counts.

``teacher.gate``: ``warn`` (default) logs the verdict and puts a warning in the report, the run
goes on; ``stop`` raises :class:`TeacherGateError` (exit code 2 in the CLI) before the pool is
labeled; ``off`` skips the gate. It is skipped, with a log line, when no method uses the teacher,
when there is no dev set, and for tasks other than classification and NER.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import TeacherError
from .labeling import as_demonstrations
from .methods import METHODS
from .methods.training import fit_student, primary_metric
from .students.checkpoint import drop_optimizer_state

log = logging.getLogger(__name__)

MARGIN = 0.05  #: the least margin of both comparisons (see the module docstring); one dev example if larger
GATED_KINDS = ("classification", "ner")


class TeacherGateError(TeacherError):
    """The teacher failed the gate with ``teacher.gate: stop``: nothing was labeled."""


def _margin(n_dev: int) -> float:
    return max(MARGIN, 1.0 / n_dev) if n_dev else MARGIN


def chance_level(task: Any, dev: Any, metric: str) -> tuple[float, dict[str, float]]:
    """The chance level of ``metric`` on ``dev`` and what it is made of: for classification the
    larger of 1/K and the score of always answering the dev set's majority class; NER: 0."""
    if getattr(task, "kind", None) != "classification":
        return 0.0, {"no entities": 0.0}
    gold = [e.label for e in dev]
    majority = Counter(gold).most_common(1)[0][0]
    parts = {"uniform 1/K": 1.0 / len(task.labels),
             f"majority class {majority!r}": float(task.score(gold, [majority] * len(gold))[metric])}
    return max(parts.values()), parts


def gate_dev(cfg: Any, sess: Any) -> list[Any]:
    """The dev examples the gate labels: the whole dev set, or with ``teacher.gate_max_dev`` at
    most that many. Classification takes the same number of each class (``gate_max_dev // K``, at
    least one), the first of each in the dev set's order (which the seed drew), so a 77-class dev
    set of 616 gives 154; other tasks the first ``gate_max_dev``."""
    dev, cap = list(sess.splits.dev), cfg.teacher.gate_max_dev
    if cap is None or len(dev) <= cap:
        return dev
    if sess.task.kind != "classification":
        return dev[:cap]
    per = max(1, cap // len({e.label for e in dev}))
    seen: Counter[Any] = Counter()
    out = []
    for e in dev:
        seen[e.label] += 1
        if seen[e.label] <= per:
            out.append(e)
    return out


def skip_reason(cfg: Any, sess: Any) -> str | None:
    """Why the gate does not run for this run (None: it runs)."""
    if cfg.teacher.gate == "off":
        return "teacher.gate: off"
    if not any(METHODS[m].uses_teacher for m in cfg.methods):
        return "no method uses the teacher"
    if not sess.splits.dev:
        return "no dev set"
    if sess.task.kind not in GATED_KINDS:
        return f"task.kind {sess.task.kind} (the gate scores classification and NER)"
    return None


# the zoo's instruct teachers, smallest first: the gate names the next larger one (gemma-3-270m
# is a base model, not one to suggest)
ZOO_TEACHERS_BY_SIZE = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]


def _larger_teacher(model: str) -> str:
    """Where to find a larger teacher than ``model``: the next zoo teacher, or, past the zoo's
    largest, a model from outside the zoo."""
    order = ZOO_TEACHERS_BY_SIZE
    at = order.index(model) if model in order else -1
    if at == len(order) - 1:
        return (f"a larger teacher than {model}, the zoo's largest (teacher.model: a Hugging Face id, a local "
                "GGUF path, or an OpenAI-compatible endpoint with teacher.backend: openai)")
    return f"a larger teacher (teacher.model, e.g. {order[at + 1] if at >= 0 else order[-1]})"


def _suggestions(cfg: Any, task: Any, n_shots: int) -> str:
    tips = [_larger_teacher(str(cfg.teacher.model)), f"fewer or shorter demonstrations (task.shots, now {n_shots})"]
    if getattr(task, "kind", None) == "classification" and cfg.teacher.labeling != "score":
        tips.append("teacher.labeling: score (argmax over the label set: no unparsed replies)")
    return "; ".join(tips)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def teacher_gate(cfg: Any, sess: Any, run_dir: Path) -> dict[str, Any]:
    """Run the gate (see the module docstring); returns its record for ``metrics.json`` and the
    report: ``status`` (``skipped``, ``passed``, ``failed``), the scores, the margin, the cost
    estimate and, when failed, the ``warning``. Raises :class:`TeacherGateError` when it fails
    with ``teacher.gate: stop``."""
    reason = skip_reason(cfg, sess)
    if reason is not None:
        log.info("teacher gate skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    task, dev = sess.task, gate_dev(cfg, sess)
    first = next(m for m in cfg.methods if METHODS[m].uses_teacher)
    ctx = sess.context(first, run_dir / "gate")

    # 1. the teacher on the dev set (the first prompt apart: it pays the model load and prefix)
    teacher = sess.teacher
    t_first = time.perf_counter()
    labels = ctx.label(dev[:1], stage="gate-dev", desc="gate: teacher on dev")
    before = (teacher.seconds + teacher.cached_seconds, teacher.prompt_tokens)
    first_s = time.perf_counter() - t_first
    labels += ctx.label(dev[1:], stage="gate-dev", desc="gate: teacher on dev")
    after = (teacher.seconds + teacher.cached_seconds, teacher.prompt_tokens)
    preds = [None if lab.abstained else lab.label for lab in labels]
    gold = [e.label for e in dev]
    teacher_scores = task.score(gold, preds)
    metric = primary_metric(task, teacher_scores)

    # 2. the supervised-k student, in the supervised method's folder when the run has it (reused there)
    if "supervised" in cfg.methods:
        sctx, tag, where = sess.context("supervised", run_dir / "supervised"), "student", "supervised/student"
    else:
        sctx, tag, where = ctx, "gate-supervised", "gate/gate-supervised"
    student, _ = fit_student(sctx, list(sctx.labeled), tag=tag)
    student_scores = sctx.evaluate(student.predict(dev), dev)
    if tag == "gate-supervised":  # trained for good: keep its weights, not the AdamW moments (2x the weights)
        drop_optimizer_state(run_dir / "gate")

    # 3. what labeling the pool costs, from the dev labeling
    n_rest = max(1, len(dev) - 1)
    per_prompt = (after[0] - before[0]) / n_rest if len(dev) > 1 else first_s
    tokens = (after[1] - before[1]) / n_rest if len(dev) > 1 else 0
    to_label = len(sess.splits.pool) + (len(sess.splits.test) if "teacher" in cfg.methods else 0)

    # 4. the verdict
    t, s = float(teacher_scores[metric]), float(student_scores[metric])
    chance, chance_parts = chance_level(task, dev, metric)
    margin = _margin(len(dev))
    problems = []
    if t <= chance + margin:
        problems.append(f"near chance ({metric} {t:.3f} <= chance {chance:.3f} + margin {margin:.3f})")
    if t < s - margin:
        problems.append(f"below the supervised-k student ({t:.3f} < {s:.3f} - margin {margin:.3f})")
    demos = as_demonstrations(ctx.shots)
    rec: dict[str, Any] = {
        "status": "failed" if problems else "passed", "mode": cfg.teacher.gate, "metric": metric,
        "demonstrations": demos.mode, "shots_per_prompt": demos.per_prompt,
        "n_dev": len(dev), "n_dev_total": len(sess.splits.dev), "n_labeled": len(sctx.labeled), "teacher": t, "student": s,
        "teacher_abstention_rate": sum(p is None for p in preds) / len(preds),
        "chance": chance, "chance_parts": chance_parts, "margin": margin, "problems": problems,
        "student_checkpoint": where, "seconds_per_prompt": round(per_prompt, 4),
        "prompt_tokens_per_prompt": round(tokens, 1), "prompts_to_label": to_label,
        "estimated_labeling_seconds": round(per_prompt * to_label, 1),
        "estimated_prompt_tokens": int(tokens * to_label),
        # every dev answer, for the report's calibration plot (report.py moves it to gate/dev_labels.jsonl)
        "dev_labels": [{"id": e.id, "gold": e.label, "label": lab.label, "confidence": lab.confidence,
                        "abstained": lab.abstained} for e, lab in zip(dev, labels)],
    }
    cost = (f"labeling {to_label} prompts would take about {_duration(rec['estimated_labeling_seconds'])} "
            f"({per_prompt:.2f} s per prompt measured on the dev labeling, cached answers at their original cost)")
    summary = (f"teacher gate: on the {len(dev)} dev examples the teacher scores {metric} {t:.3f}, the student "
               f"trained on the {len(sctx.labeled)} gold examples {s:.3f}, chance {chance:.3f}; {cost}")
    log.info("%s", summary)
    if not problems:
        return rec
    message = (f"teacher gate: the teacher is {' and '.join(problems)} on the {len(dev)} dev examples, so "
               f"distillation from it is unlikely to help (the student trained on the {len(sctx.labeled)} gold "
               f"examples scores {s:.3f}; {cost}). Try {_suggestions(cfg, task, demos.per_prompt)}.")
    rec["warning"] = message
    if cfg.teacher.gate == "stop":
        raise TeacherGateError(message + " Stopped before labeling the pool (teacher.gate: stop; "
                                          "teacher.gate: warn goes on anyway).")
    log.warning("%s", message + " The run goes on (teacher.gate: warn; stop ends the run here).")
    return rec
