"""MCKD: multistage collaborative knowledge distillation (Zhao et al., ACL 2024; arXiv 2311.08640).

The algorithm (paper Sec. 3, "Multistage collaborative KD"; Fig. 1), step by step in :meth:`MCKD.run`:

1. the few-shot teacher pseudo-labels the unlabeled pool D_U (Sec. 3.1; cached, abstentions kept
   as abstentions, never as labels);
2. D_U is split at random into ``parts`` disjoint parts of (near) equal size; the paper uses two
   halves A and B (Sec. 3.2);
3. every intermediate stage k = 1 .. K-1 trains a *fresh* student on each part's latest labels and
   lets it relabel every *other* part (cross-partition labeling, Sec. 3.2); a student never
   relabels its own training data;
4. the final stage K trains one fresh student on all parts with their latest labels; it is the
   output. "K-stage MCKD" = K-1 pair stages + the final stage; K = 1 is vanilla KD (Sec. 3.3).

The part students of a stage (and, with ``final_every_stage``, the K'=k final student beside them)
depend on none of each other: they go through :func:`.base.fit_independent`, which trains them
one after another, or as parallel Ray tasks under ``llmkd run --executor ray``
(:mod:`llmkd.ray_students`), with the same results.

Students learn from hard pseudo-labels (sequence-level KD, Kim & Rush 2016; paper Sec. 3.1).
The paper's extra baseline, :class:`~llmkd.methods.self_distill.SelfDistill` ("KD + SD w/ filter",
Sec. 4.2), lives in :mod:`llmkd.methods.self_distill` and reuses the helpers below.

Choices the paper leaves open (documented in docs/methods/mckd.md):

- Checkpoint selection. Default ``selection="fidelity"``: the paper's label-free rule (Sec. 4.1,
  "Model selection"): stop once the student's fit to its *own training pseudo-labels* (the task's
  primary metric, on a 0-1 scale) changed by <= ``fidelity_tol`` = 0.001 ("0.1%") over
  ``fidelity_window`` = 3 evaluations, and keep that checkpoint. ``selection="dev"`` uses the small
  labeled dev set (early stopping on the best dev score). The gold labels of the pool are never
  read (the reference code peeks at them).
- Teacher abstentions: the partition covers the whole pool, abstained items included (dealt after
  the answered items, so each part gets an equal share of the labels it first trains on); they are
  left out of the first training sets and get their first label from the other part's student
  ("filled in"). If a student abstains on an item (e.g. unparseable seq2seq output), the item
  keeps its previous label. With K = 1 abstained items are simply dropped, as in vanilla KD.
- n > 2 parts (our extension): an item of part j gets n-1 predictions (from the students of the
  other parts); they are combined by majority vote over identical labels, ties broken by the
  larger summed confidence, then by the lower part index.
- Gold examples are not mixed into students' data (``mix_gold=True`` adds the labeled set to
  every student's training data, an option the paper does not use).
- Student seeds: the part students of stage k get ``seed + 100 k + i + 1``, every final student
  gets ``seed``, so MCKD-1/2/3 finals differ only in their labels.

- Soft targets (``student.targets: soft | mix``, not in the paper, which uses hard labels): a
  student learns the teacher's label distribution where its latest label is still the teacher's
  (stage 1, and items every student abstained on); labels a student gave train hard, so from
  stage 2 on MCKD trains on hard labels (a student's own probabilities are not used as targets).

Not handled: logit distillation from student to student; re-querying the teacher after stage 1
(the paper queries it once).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Collection, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..labeling import abstention_rate
from ..types import Example, Prediction, RunResult, TeacherLabel, Unlabeled
from .base import RunContext, fit_independent, fit_student, require_answers
from .training import teacher_examples

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
class _SelectionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selection: Literal["fidelity", "dev"] = Field(
        "fidelity", description="fidelity: label-free training-fidelity rule (paper); dev: small labeled dev set")
    fidelity_tol: float = Field(0.001, ge=0, le=1, description="stop when fidelity moves by <= this (0-1 scale)")
    fidelity_window: int = Field(3, ge=1, description="... over this many evaluations")
    mix_gold: bool = Field(False, description="add the labeled gold examples to every student's data")
    relabel_decoding: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for student.predict when relabeling (e.g. num_beams)")


class MCKDOptions(_SelectionOptions):
    """``method_options.mckd`` in a run config."""

    stages: int = Field(3, ge=1, description="K: K-1 cross-labeling stages + the final stage; 1 = vanilla KD")
    parts: int = Field(2, ge=2, description="disjoint parts of the pool (the paper: 2 halves)")
    stage_epochs: list[int] | None = Field(
        None, description="epochs per stage (K entries, the last for the final student); default student.epochs")
    final_every_stage: bool = Field(
        False, description="also train a final student after every stage: reports MCKD-1..K from one run")

    @field_validator("stage_epochs")
    @classmethod
    def _epochs_per_stage(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        stages = info.data.get("stages")
        if value is not None and stages is not None:
            if len(value) != stages:
                raise ValueError(f"needs one entry per stage (stages={stages}, the last for the final student); "
                                 f"got {len(value)} entries")
            if any(e < 1 for e in value):
                raise ValueError("every entry must be an int >= 1")
        return value


# --------------------------------------------------------------------------------------------
# helpers shared by MCKD and SelfDistill
# --------------------------------------------------------------------------------------------
def label_key(label: Any) -> str:
    """A hashable, order-stable key for any label (class name, tag list, string, tree): two labels
    are the same iff their keys are equal. Lists and tuples compare equal (JSON round trips)."""
    return json.dumps(label, sort_keys=True, ensure_ascii=False, default=str)


def partition(ids: Sequence[str], parts: int, seed: int, abstained: Collection[str] = ()) -> list[list[str]]:
    """Shuffle ``ids`` with ``seed`` and deal them into ``parts`` disjoint parts whose sizes differ
    by at most one (the paper's two equal halves, Sec. 3.2). Items the teacher ``abstained`` on are
    dealt after the answered ones, so the answered items (a part's first training set) are also
    spread evenly: with a teacher that abstains often, a purely random split can leave one part
    with no labels to train on. Without abstentions the split is the plain shuffle."""
    if parts < 2:
        raise ValueError(f"The 'parts' parameter of MCKD must be an int >= 2. Got {parts}.")
    if len(ids) < parts:
        raise ValueError(f"MCKD needs at least one pool example per part: the pool has {len(ids)} examples "
                         f"for parts={parts}. Use a larger data.split.pool_size or fewer parts.")
    rng = random.Random(seed)
    skipped = set(abstained)
    answered, rest = [x for x in ids if x not in skipped], [x for x in ids if x in skipped]
    rng.shuffle(answered)
    rng.shuffle(rest)
    order = answered + rest
    return [order[i::parts] for i in range(parts)]


def prediction_confidence(pred: Prediction) -> float | None:
    """The student's confidence in its own label, else ``None``: a ``confidence`` attribute where
    the prediction has one (NER's TagPrediction: the smallest per-word top probability; seq2seq:
    the sequence score), else the probability of the label in ``probs`` (classification), else
    ``probs["confidence"]``."""
    own = getattr(pred, "confidence", None)
    if own is not None:
        return float(own)
    probs = pred.probs or {}
    try:
        if pred.label in probs:
            return float(probs[pred.label])
    except TypeError:  # unhashable label (tag list)
        pass
    value = probs.get("confidence")
    return None if value is None else float(value)


def combine_votes(votes: Sequence[tuple[int, Prediction]]) -> tuple[Prediction, list[int]]:
    """Combine the predictions of several students for one item: majority vote over identical
    labels, ties broken by the larger summed confidence, then by the lower part index. Returns the
    winning prediction (of the first winning voter) and the parts whose students voted for it."""
    groups: dict[str, list[tuple[int, Prediction]]] = {}
    for part, pred in votes:
        if pred.label is not None:
            groups.setdefault(label_key(pred.label), []).append((part, pred))
    if not groups:
        return Prediction(None, {}), []

    def rank(key: str) -> tuple[int, float, int]:
        g = groups[key]
        return (len(g), sum(prediction_confidence(p) or 0.0 for _, p in g), -min(i for i, _ in g))

    best = max(groups, key=rank)
    return groups[best][0][1], sorted(i for i, _ in groups[best])


def _selection_fit(ctx: RunContext, opts: _SelectionOptions, examples: list[Example], *, tag: str, seed: int,
                   epochs: int | None = None) -> tuple[Any, dict[str, Any]]:
    """fit_student with the configured checkpoint selection (fidelity to the training labels, or the
    dev set) and optional per-stage epochs."""
    train = ctx.train if epochs is None else dataclasses.replace(ctx.train, epochs=epochs)
    if opts.selection == "fidelity":
        train = dataclasses.replace(train, patience=opts.fidelity_window)
        c = dataclasses.replace(ctx, train=train)
        student, record = fit_student(c, examples, tag=tag, seed=seed, select_on=examples, plateau=opts.fidelity_tol)
        return student, {**record, "dev_metric": f"training-fidelity {record.get('dev_metric')}"}
    return fit_student(dataclasses.replace(ctx, train=train), examples, tag=tag, seed=seed)


def _predict(student: Any, items: Sequence[Any], decoding: dict[str, Any]) -> list[Prediction]:
    if not items:
        return []
    if not decoding:
        return list(student.predict(items))
    try:
        return list(student.predict(items, **decoding))
    except TypeError as exc:
        raise TypeError(f"relabel_decoding={decoding} was given, but {type(student).__name__}.predict does not "
                        f"accept these arguments ({exc}). Remove relabel_decoding or use keys the student accepts."
                        ) from None


def _teacher_labels(ctx: RunContext) -> list[TeacherLabel]:
    labels = ctx.label(ctx.pool, stage="teacher-pool", desc="teacher on pool")
    if labels:  # an empty pool is left to partition()'s error
        require_answers(labels, ctx.task)
    return labels


def _examples(items: Sequence[Unlabeled], labels: dict[str, TeacherLabel], targets: str = "hard") -> list[Example]:
    """Training examples: each item with its latest label; abstained items are left out. With
    ``targets`` soft / mix (``student.targets``) a label the teacher gave carries its distribution
    (``Example.soft``); a label a student gave trains on the hard label (:func:`.training.teacher_examples`)."""
    return teacher_examples([labels[u.id] for u in items], {u.id: u.text for u in items}, targets)


def _read_labels(path: Path) -> dict[str, TeacherLabel]:
    return {d["id"]: TeacherLabel.from_dict(d) for d in read_jsonl(path)}


def _student_report(ctx: RunContext, student: Any, record: dict[str, Any]) -> tuple[dict[str, Any], list[Prediction]]:
    """Dev and test metrics of one student (reporting only: selection never reads the test set),
    and its test predictions."""
    out: dict[str, Any] = {"n_train": record.get("n_train"), "best_epoch": record.get("best_epoch"),
                           "epochs": record.get("epoch"), "stop_reason": record.get("stop_reason"),
                           "selection_metric": record.get("dev_metric"), "selection_score": record.get("best_score")}
    if ctx.dev:
        out["dev"] = ctx.evaluate(student.predict(ctx.dev), ctx.dev)
    preds = list(student.predict(ctx.test)) if ctx.test else []
    if ctx.test:
        out["test"] = ctx.evaluate(preds, ctx.test)
    return out, preds


@dataclasses.dataclass(frozen=True)
class _StudentJob:
    """One student: its training examples (a part's latest labels; all of them for a final
    student) and the items it relabels (the other parts; none for a final student)."""

    opts: _SelectionOptions
    tag: str
    seed: int
    epochs: int | None
    train: tuple[Example, ...]
    others: tuple[Unlabeled, ...]


def _train_part(ctx: RunContext, job: _StudentJob) -> tuple[list[Prediction], dict[str, Any]]:
    """A fresh student on the part (3a), its labels for the other parts (3b) and its report. Asks
    no teacher, so it can run as a Ray task (:func:`.base.fit_independent`)."""
    student, record = _selection_fit(ctx, job.opts, list(job.train), tag=job.tag, seed=job.seed, epochs=job.epochs)
    preds = _predict(student, job.others, job.opts.relabel_decoding)
    return preds, _student_report(ctx, student, record)[0]


# --------------------------------------------------------------------------------------------
# MCKD
# --------------------------------------------------------------------------------------------
class MCKD:
    """Multistage collaborative KD (Zhao et al. 2024). Keyword arguments as in :class:`MCKDOptions`.

    After :meth:`run`: ``stages_`` holds the per-stage report (every student's dev/test metrics,
    label churn, agreement with the teacher, abstentions filled in), ``provenance_`` every item's
    part and its label and labeler at each stage. Both are also written to the work directory
    (``stages.json``, ``provenance.jsonl``, ``labels-stage<k>.jsonl``).
    """

    name = "mckd"

    def __init__(self, *, stages: int = 3, parts: int = 2, mix_gold: bool = False, selection: str = "fidelity",
                 fidelity_tol: float = 0.001, fidelity_window: int = 3, stage_epochs: list[int] | None = None,
                 relabel_decoding: dict[str, Any] | None = None, final_every_stage: bool = False) -> None:
        self.stages = stages
        self.parts = parts
        self.mix_gold = mix_gold
        self.selection = selection
        self.fidelity_tol = fidelity_tol
        self.fidelity_window = fidelity_window
        self.stage_epochs = stage_epochs
        self.relabel_decoding = relabel_decoding
        self.final_every_stage = final_every_stage

    def _options(self) -> MCKDOptions:
        if not isinstance(self.stages, int) or self.stages < 1:
            raise ValueError(f"The 'stages' parameter of MCKD must be an int >= 1. Got {self.stages!r}.")
        if not isinstance(self.parts, int) or self.parts < 2:
            raise ValueError(f"The 'parts' parameter of MCKD must be an int >= 2. Got {self.parts!r}.")
        return MCKDOptions(stages=self.stages, parts=self.parts, mix_gold=self.mix_gold, selection=self.selection,
                           fidelity_tol=self.fidelity_tol, fidelity_window=self.fidelity_window,
                           stage_epochs=self.stage_epochs, relabel_decoding=self.relabel_decoding or {},
                           final_every_stage=self.final_every_stage)

    def _epochs(self, opts: MCKDOptions, stage: int) -> int | None:
        return None if opts.stage_epochs is None else opts.stage_epochs[stage - 1]

    def run(self, ctx: RunContext) -> RunResult:
        opts = self._options()
        wd = ctx.workdir
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        teacher = _teacher_labels(ctx)                                                        # 1 teacher labels D_U
        label_s = time.perf_counter() - t0
        parts = self._partition(ctx, opts, teacher)                                           # 2 random disjoint parts
        items = {u.id: u for u in ctx.pool}
        latest = {lab.example_id: lab for lab in teacher}
        history: list[dict[str, TeacherLabel]] = [latest]
        stage_reports: list[dict[str, Any]] = []
        finals: dict[int, dict[str, Any]] = {}
        t1 = time.perf_counter()
        for k in range(1, opts.stages):                                                       # 3 stages 1..K-1
            final = self._final_job(ctx, opts, items, latest, after=k - 1) if opts.final_every_stage else None
            latest, report, final_report = self._cross_stage(ctx, opts, k, parts, items, latest, teacher, final)
            if final_report is not None:
                finals[k] = {"stages": k, **final_report}
            history.append(latest)
            stage_reports.append(report)
        record, final_report, preds = self._final(ctx, opts, items, latest, after=opts.stages - 1)  # 4 final student
        finals[opts.stages] = final_report
        self.stages_ = stage_reports
        self.provenance_ = self._provenance(parts, history)
        final_labels = [latest[u.id] for u in ctx.pool]
        return RunResult(
            self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(final_labels),
            stop_reason=f"{opts.stages}-stage MCKD finished ({record['stop_reason']})",
            timings={"label_seconds": label_s, "train_seconds": time.perf_counter() - t1},
            extra={"training": record, "n_train": record.get("n_train"), "stages": stage_reports,
                   "finals": {str(k): v for k, v in finals.items()}, "options": opts.model_dump(),
                   "pool_abstention_rate": abstention_rate(teacher), "part_sizes": [len(p) for p in parts]},
            records={"provenance": self.provenance_},                                         # report (report.py)
        )

    # -- step 2 --------------------------------------------------------------------------------
    def _partition(self, ctx: RunContext, opts: MCKDOptions, teacher: Sequence[TeacherLabel]) -> list[list[str]]:
        """The random parts, saved to ``partition.json`` so a rerun uses the very same split."""
        path = ctx.workdir / "partition.json"
        ids = [u.id for u in ctx.pool]
        if path.exists():
            saved = read_json(path)
            if sorted(i for p in saved["parts"] for i in p) == sorted(ids) and len(saved["parts"]) == opts.parts:
                return saved["parts"]
            log.warning("%s does not match this pool / parts=%d; drawing a new partition", path, opts.parts)
        parts = partition(ids, opts.parts, seed=ctx.seed + 7, abstained={t.example_id for t in teacher if t.abstained})
        write_json(path, {"seed": ctx.seed + 7, "parts": parts})
        return parts

    # -- step 3 --------------------------------------------------------------------------------
    def _cross_stage(self, ctx: RunContext, opts: MCKDOptions, k: int, parts: list[list[str]],
                     items: dict[str, Unlabeled], latest: dict[str, TeacherLabel], teacher: list[TeacherLabel],
                     final: _StudentJob | None = None,
                     ) -> tuple[dict[str, TeacherLabel], dict[str, Any], dict[str, Any] | None]:
        """Stage k: a fresh student per part, trained on that part's latest labels, relabels every
        other part. Labels are saved to ``labels-stage<k>.jsonl`` (a rerun loads them).
        ``final``: the K'=k final student (``final_every_stage``), trained on the same labels
        beside the part students (it depends on none of them); returns its report too (else None)."""
        path, rep_path = ctx.workdir / f"labels-stage{k}.jsonl", ctx.workdir / f"stage{k}.json"
        if path.exists() and rep_path.exists():
            log.info("stage %d: labels found in %s; skipping its students", k, path)
            final_report = fit_independent(ctx, _train_part, [final], tags=[final.tag])[0][1] if final else None
            return _read_labels(path), read_json(rep_path), final_report
        jobs = [_StudentJob(opts, tag=f"stage{k}-part{i}", seed=ctx.seed + 100 * k + i + 1, epochs=self._epochs(opts, k),
                         train=tuple(_examples([items[x] for x in part], latest, ctx.train.targets)
                                     + (list(ctx.labeled) if opts.mix_gold else [])),
                         others=tuple(items[x] for j, p in enumerate(parts) if j != i for x in p))
                for i, part in enumerate(parts)]
        extra = [final] if final else []                                                     # (optional) K'=k final
        done = fit_independent(ctx, _train_part, extra + jobs, tags=[j.tag for j in extra + jobs],  # 3a+b one student
                               desc=f"stage {k} students")                                   #   per part (on Ray: in parallel)
        final_report = done.pop(0)[1] if final else None
        votes: dict[str, list[tuple[int, Prediction]]] = {i: [] for i in items}
        students: list[dict[str, Any]] = []
        for i, (job, (preds, student_report)) in enumerate(zip(jobs, done)):
            for u, pred in zip(job.others, preds):
                votes[u.id].append((i, pred))
            students.append({"part": i, **student_report})
        new: dict[str, TeacherLabel] = {}
        kept = 0
        for x, vs in votes.items():                                                           # 3c combine the n-1 votes
            pred, voters = combine_votes(vs)
            if pred.label is None:  # every student abstained: keep the previous label
                new[x], kept = latest[x], kept + 1
                continue
            probs = pred.probs if all(isinstance(v, (int, float)) for v in (pred.probs or {}).values()) else None
            new[x] = TeacherLabel(x, pred.label, prediction_confidence(pred), False, "student", "",
                                  stage=f"stage{k}:student-of-part{'+'.join(map(str, voters))}", probs=probs or None)
        report = {"stage": k, "students": students, **stage_stats(teacher, latest, new), "kept_previous": kept}
        write_jsonl(path, (new[u].to_dict() for u in items))
        write_json(rep_path, report)
        return new, report, final_report

    # -- step 4 --------------------------------------------------------------------------------
    def _final_job(self, ctx: RunContext, opts: MCKDOptions, items: dict[str, Unlabeled],
                   latest: dict[str, TeacherLabel], *, after: int) -> _StudentJob:
        """The final student of (after+1)-stage MCKD as a job (``final_every_stage``: it may train
        beside the next stage's part students)."""
        train = _examples(list(items.values()), latest, ctx.train.targets) + (list(ctx.labeled) if opts.mix_gold else [])
        return _StudentJob(opts, tag=f"final-after-stage{after}", seed=ctx.seed, epochs=self._epochs(opts, opts.stages),
                           train=tuple(train), others=())

    def _final(self, ctx: RunContext, opts: MCKDOptions, items: dict[str, Unlabeled],
               latest: dict[str, TeacherLabel], *, after: int) -> tuple[dict[str, Any], dict[str, Any], list[Prediction]]:
        """One fresh student on every part with the latest labels (after stage ``after``): the
        output of (after+1)-stage MCKD. Returns its training record, report and test predictions."""
        job = self._final_job(ctx, opts, items, latest, after=after)
        student, record = _selection_fit(ctx, opts, list(job.train), tag=job.tag, seed=job.seed, epochs=job.epochs)
        report, preds = _student_report(ctx, student, record)
        return record, {"stages": after + 1, **report}, preds

    @staticmethod
    def _provenance(parts: list[list[str]], history: list[dict[str, TeacherLabel]]) -> list[dict[str, Any]]:
        part_of = {x: i for i, p in enumerate(parts) for x in p}
        rows = []
        for x in sorted(part_of, key=lambda x: (part_of[x], x)):
            rows.append({"id": x, "part": part_of[x], "labels": [
                {"stage": k, "label": h[x].label, "abstained": h[x].abstained, "source": h[x].source,
                 "by": h[x].stage, "confidence": h[x].confidence} for k, h in enumerate(history)]})
        return rows


def stage_stats(teacher: Sequence[TeacherLabel], before: dict[str, TeacherLabel],
                after: dict[str, TeacherLabel]) -> dict[str, Any]:
    """Label churn between two stages, agreement with the teacher, abstentions filled in."""
    both = [x for x in after if not after[x].abstained and not before[x].abstained]
    changed = sum(label_key(after[x].label) != label_key(before[x].label) for x in both)
    answered = [t for t in teacher if not t.abstained]
    agree = sum(not after[t.example_id].abstained and label_key(after[t.example_id].label) == label_key(t.label)
                for t in answered)
    abst = [t.example_id for t in teacher if t.abstained]
    filled = sum(not after[x].abstained for x in abst)
    return {"churn": changed / len(both) if both else 0.0, "changed": changed,
            "agreement_with_teacher": agree / len(answered) if answered else 0.0,
            "teacher_abstentions": len(abst), "abstentions_filled": filled,
            "abstained": sum(lab.abstained for lab in after.values())}


def __getattr__(name: str) -> Any:
    """``SelfDistill`` and ``SelfDistillOptions`` moved to :mod:`llmkd.methods.self_distill`; their old
    import path keeps working (lazily: ``self_distill`` imports this module)."""
    if name in ("SelfDistill", "SelfDistillOptions"):
        from . import self_distill

        return getattr(self_distill, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
