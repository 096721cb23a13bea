"""EvoKD: evolving knowledge distillation with LLM-driven active synthesis.

Liu, Kang, Zhao, Kuang, Jiang, Sun, Wu. "Evolving Knowledge Distillation with Large Language
Models and Active Learning", LREC-COLING 2024 (arXiv 2403.06414). Only the abstract and
third-party summaries could be read here (see ``shared/methods/evokd.md``), so section numbers
refer to the loop as the abstract ("iterative feedback", "active learning") and the summaries
describe it; every choice the paper leaves open is an option below, documented in
``docs/methods/evokd.md``.

The loop (one commented step per line in :meth:`EvoKD.run`)::

    0. train a student on the k gold seeds                                   (fresh student)
    round 1 (``plain_first``): no analysis; step 3 asks for a plain batch (the no-feedback prompt),
       steps 4-6 as below; the seed student's predictions on it, made before it trains on it,
       are round 2's feedback, so the first analysis sees mistakes on texts it never saw
    repeat for ``rounds`` rounds, or until the dev score plateaus or a budget runs out:
    1. evaluate the student on the feedback set: the gold seeds and the samples generated last
       round (predicted before the student trained on them, ``feedback_from``); split it into
       wrong and right samples ("wrong" = student label != LLM label, or != gold for seeds)
    2. the LLM analyses the student's weaknesses in words, shown wrong AND right samples and its
       own analyses of the last ``history`` rounds          (prompt evokd_analyze_<cls|ner>.v1)
    3. the LLM writes ``n_hard`` hard inputs aimed at the weaknesses and ``n_easy`` easy ones
       that keep coverage                                   (prompt evokd_generate_<cls|ner>.v1)
       -- unparseable replies are re-asked with the error appended, ``max_reasks`` times
    4. hygiene: validate, dedupe (exact + near-duplicate by embeddings) against everything kept
       so far, drop texts too close to any dev / test text (the leak guard)
    5. a *separate* LLM call labels each surviving input (the run's few-shot labeling prompt);
       abstentions and labels outside the label set are dropped, never defaulted
    6. train the same student further on the new batch + replay of earlier rounds (the paper's
       "review") + the gold seeds, ``epochs_per_round`` epochs and at least ``min_steps_per_round``
       optimizer steps; evaluate on the dev set (``student.targets: soft | mix``: the synthetic
       samples also carry step 5's label distribution; the seeds train on their gold labels)
    7. keep the best-dev round's student; stop on plateau (``patience``) or budget

The "generation without feedback" baseline (``synth_nofeedback``, or ``feedback: false``;
ZeroGen / AugGPT-style) is this same loop with steps 1-2 removed and step 3 asking for
``n_hard + n_easy`` plain new texts every round: the same LLM samples in the same generation
calls (its round 1 is EvoKD's round 1, prompt for prompt), same hygiene, labeling, training and
stopping. ``preset: paper`` sizes a run as issue 28 asks (11 rounds x 30 samples, no plateau
stop). Each round record keeps its feedback set as shown, its analysis, its samples
(``state.json``) and the seconds of analysis, generation, labeling and training.

Model selection uses only the small gold dev set; test texts are read by the leak guard (texts
only, never labels) and by the final evaluation. Resumable: each finished round is checkpointed
(``state.json`` + student slots); a rerun continues after the last finished round, and the teacher
calls of an interrupted round come back from the cache.

Not handled: the paper's "EvoKD + Init" variant (pre-training on AugGPT data), checking after
the fact that "hard" samples are hard (we measure it instead: the student's accuracy on each
batch's hard and easy samples before training is in the per-round record), tasks other than
classification and NER (those that do not offer :class:`llmkd.tasks.base.Synthesizes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError, TeacherError
from ..labeling import label_examples
from ..io import read_json, write_json
from ..synthesis import Generated, HygieneCounts, SampleFilter, parse_generated, validate_text
from ..tasks.base import ScoresOptions, Synthesizes, load_template
from ..teachers.base import ChatTurn, Constraint
from ..teachers.budget import BudgetMeter, BudgetSpent
from ..types import Example, RunResult, TeacherLabel, Unlabeled
from .base import RunContext, fit_student, min_epochs
from .training import PlainEpochs, main_score, train_loop

log = logging.getLogger(__name__)


PRESETS: dict[str, dict[str, Any]] = {
    # paper-sized synthesis (docs/methods/evokd.md): 1 plain round + 10 feedback rounds x 30 samples
    # asked = 330 samples, a fixed number of rounds (no plateau stop), the best-dev round kept
    "paper": {"rounds": 11, "per_round": 30, "patience": 0},
}


class EvoKDOptions(BaseModel):
    """Options of ``evokd`` and ``synth_nofeedback`` (``method_options.<name>`` in a run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["paper"] | None = Field(
        None, description="fill the options not given from a preset: paper = rounds 11 (1 plain + 10 with feedback), "
                          "per_round 30 (330 samples asked), patience 0")
    feedback: bool | None = Field(
        None, description="analyse the student's errors before each generation; null = the method's own (evokd: "
                          "true, synth_nofeedback: false); false = generation without feedback, same calls and samples")
    plain_first: bool = Field(
        True, description="with feedback: round 1 asks for a plain batch (no analysis, the no-feedback prompt); the "
                          "seed student is judged on it before training, so round 2's analysis sees its real mistakes "
                          "on new texts, not only the seeds it was trained on")
    rounds: int = Field(4, ge=1, description="synthesis rounds (after training on the gold seeds), the plain round included")
    per_round: int | None = Field(
        None, ge=1, description="samples asked for per round (the per-round budget): sets n_hard = per_round // 2 and "
                                "n_easy = the rest; null = n_hard + n_easy")
    n_hard: int = Field(6, ge=0, description="hard inputs asked for per round (no-feedback: n_hard + n_easy plain)")
    n_easy: int = Field(6, ge=0, description="easy inputs asked for per round")
    gen_calls_per_round: int = Field(2, ge=1, description="generation calls per round at most, until n_hard+n_easy are kept "
                                                          "(times the number of max_per_call chunks)")
    max_per_call: int | None = Field(10, ge=1, description="samples asked for in one generation call at most; a round that "
                                                           "wants more asks in several calls (long replies loop: "
                                                           "docs/results/evokd_budget200.md); null = all in one call")
    show_wrong: int = Field(6, ge=0, description="wrong samples shown to the analysis prompt (class-balanced)")
    show_right: int = Field(4, ge=0, description="right samples shown to the analysis prompt (class-balanced)")
    history: int = Field(2, ge=0, description="earlier analyses shown to the analysis prompt")
    feedback_from: Literal["before_training", "after_training"] = Field(
        "before_training", description="judge last round's samples with the student before or after it trained on them")
    replay: float = Field(1.0, ge=0, le=1, description="fraction of earlier rounds' samples replayed each round (review)")
    replay_gold: bool = Field(True, description="train on the gold seeds every round")
    epochs_per_round: int = Field(3, ge=1, description="epochs over a round's training set (new + replay + seeds) at least")
    min_steps_per_round: int | None = Field(
        None, ge=0, description="optimizer steps per round at least (a small round gets more epochs); null = the run's "
                                "student.min_steps. A token tagger on ~20 sentences still tags everything O after "
                                "3 epochs of 2 steps (docs/methods/evokd.md)")
    patience: int = Field(2, ge=0, description="stop after this many rounds without dev gain; 0 = never")
    temperature: float = Field(0.7, gt=0, description="sampling temperature of analysis and generation")
    tokens_per_sample: int = Field(40, ge=8, description="generation max_tokens = this x samples asked for")
    analysis_max_tokens: int = Field(160, ge=16, description="max_tokens of the analysis call (the teacher's reading of the student's errors)")
    chat_prompts: bool = Field(True, description="send the analysis and synthesis prompts (instructions, no demonstrations) "
                                                 "as chat turns whatever teacher.chat says; labeling follows teacher.chat")
    max_reasks: int = Field(2, ge=0, description="re-asks with the error appended after an unusable reply")
    max_teacher_calls: int | None = Field(None, ge=1, description="budget: prompts sent (generate + score), all steps")
    max_teacher_tokens: int | None = Field(None, ge=1, description="budget: prompt + completion tokens of generate calls")
    near_dup: float = Field(0.95, gt=0, le=1, description="cosine at or above which a sample is a near-duplicate")
    leak: float = Field(0.9, gt=0, le=1, description="cosine to a dev/test text at or above which a sample is a leak")
    leak_ngram: int = Field(8, ge=0, description="a shared run of this many words with a dev/test text is a leak; 0 = off")
    embedder: str = Field("all-minilm-l6-v2", description="encoder for near-dup / leak checks (zoo name, dir, hub id) or 'ngram'")
    min_words: int = Field(2, ge=1, description="a generated input with fewer words is dropped as invalid")
    max_words: int = Field(60, ge=1, description="a generated input with more words is dropped as invalid")
    grammar: bool = Field(False, description="constrain generation replies to the asked lines (HARD: / EASY: / TEXT: "
                                             "lines, exactly as many as asked) with a GBNF grammar where the backend "
                                             "applies one (llamacpp, vLLM servers); others generate freely")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """A preset fills the options that are not given (given ones win)."""
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = PRESETS.get(data["preset"])
            if preset is not None:  # an unknown name is left to the Literal's error
                own_split = bool({"n_hard", "n_easy"} & data.keys())  # n_hard / n_easy given: no preset per_round
                data = {**{k: v for k, v in preset.items() if not (own_split and k == "per_round")}, **data}
        return data

    @model_validator(mode="after")
    def _per_round(self) -> "EvoKDOptions":
        if self.per_round is not None:
            if {"n_hard", "n_easy"} & self.model_fields_set:
                raise ValueError("give either per_round or n_hard / n_easy, not both")
            object.__setattr__(self, "n_hard", self.per_round // 2)  # in place (frozen model)
            object.__setattr__(self, "n_easy", self.per_round - self.per_round // 2)
        return self

    @property
    def asked_per_round(self) -> int:
        return self.n_hard + self.n_easy


def _balanced(items: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``n`` items, round-robin over their (true) labels, so every class gets shown."""
    by: dict[str, list[dict[str, Any]]] = {}
    for it in rng.sample(items, len(items)):
        by.setdefault(json.dumps(it["label"], sort_keys=True), []).append(it)
    out: list[dict[str, Any]] = []
    while len(out) < n and any(by.values()):
        for key in sorted(by):
            if by[key] and len(out) < n:
                out.append(by[key].pop())
    return out


class EvoKD:
    """LLM-driven active synthesis, or its no-feedback baseline (option ``feedback: false``)."""

    def __init__(self, *, name: str = "evokd", **options: Any) -> None:
        self.name = name
        self.opts = EvoKDOptions.model_validate(options)
        self.feedback = self.opts.feedback is not False  # null: evokd's own, with feedback

    # -- the loop -----------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> RunResult:
        o, t_start = self.opts, time.perf_counter()
        if not isinstance(ctx.task, Synthesizes):
            raise ValueError(f"{self.name} supports classification and NER tasks (those that offer "
                             f"tasks.base.Synthesizes); the task is a {type(ctx.task).__name__}")
        meter = BudgetMeter(ctx.teacher, max_calls=o.max_teacher_calls, max_tokens=o.max_teacher_tokens)
        self._run_seed = ctx.seed
        state = self._load_state(ctx)
        hygiene = _make_filter(ctx, o, state)                                             # remembers kept texts
        student = self._initial_student(ctx, state)                                      # 0. student on the seeds
        seeds = [{"text": e.text, "label": e.label, "source": "gold", "kind": "gold"} for e in ctx.labeled]
        bar = self._progress_bar(ctx, state)
        while state["stop_reason"] is None:
            r = len(state["rounds"]) + 1
            rec: dict[str, Any] = {"round": r, "analysis": "", "counts": HygieneCounts()}
            meter.calls, meter.tokens = state["teacher_calls"], state["teacher_tokens"]
            plain = not self.feedback or (o.plain_first and r == 1)  # the plain round: nothing judged yet
            rec["plain"] = plain
            try:
                analysis = ""
                if not plain:
                    fb = self._feedback_set(student, seeds, state)                      # 1. wrong / right split
                    rec["feedback"] = {"shown_wrong": len(fb[0]), "shown_right": len(fb[1]), **fb[2]}
                    rec["feedback_shown"] = {"wrong": [_shown(s, pred=True) for s in fb[0]],
                                             "right": [_shown(s) for s in fb[1]]}
                    t0 = time.perf_counter()
                    analysis = self._analyse(ctx, meter, fb[0], fb[1], state["analyses"], r)  # 2. weakness analysis
                    rec["analysis_seconds"] = time.perf_counter() - t0
                    rec["analysis"] = analysis
                batch = self._synthesise(ctx, meter, analysis, hygiene, r, rec, plain=plain)  # 3-5. generate, clean, label
            except BudgetSpent as exc:                                                   # a budget ran out: keep the
                batch, state["stop_reason"] = rec.pop("partial", []), f"budget: {exc}"  #   labeled part, stop
            rec["teacher_calls"], rec["teacher_tokens"] = meter.calls, meter.tokens
            t0 = time.perf_counter()
            student, score = self._train_round(ctx, student, state, batch, rec)          # 6. train with replay
            rec["training_seconds"] = time.perf_counter() - t0
            state["rounds"].append(_jsonable(rec))
            if analysis:
                state["analyses"].append({"round": r, "text": analysis})
            state["teacher_calls"], state["teacher_tokens"] = meter.calls, meter.tokens
            plateau = self._stop(state, score, r)                                        # 7. plateau / rounds
            state["stop_reason"] = state["stop_reason"] or plateau
            self._checkpoint(ctx, student, state, score)                                 # resumable round
            bar.update(1)
            bar.set_postfix(dev=f"{score:.3f}", kept=state["rounds"][-1]["counts"]["kept"])
            log.info("%s round %d: dev %.4f, kept %s; %s", self.name, r, score, state["rounds"][-1]["counts"]["kept"],
                     state["stop_reason"] or "continuing")
        bar.close()
        return self._finish(ctx, state, time.perf_counter() - t_start)                   # best-dev student; report

    def _progress_bar(self, ctx: RunContext, state: dict[str, Any]) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.opts.rounds, initial=len(state["rounds"]), desc=f"{self.name} rounds", unit="round",
                    disable=not ctx.progress)

    # -- step 0 -------------------------------------------------------------------------------
    def _initial_student(self, ctx: RunContext, state: dict[str, Any]) -> Any:
        if state["last_slot"]:
            return ctx.student_loader(ctx.workdir / state["last_slot"])
        if not ctx.labeled:
            raise ValueError(f"{self.name}: no gold seed examples; set data.split.labeled_per_class >= 1")
        # The seed student depends only on the seeds, the seed and the training settings, so evokd and
        # synth_nofeedback of one run directory share it (trained once, in RUN_DIR/_shared).
        # (student.targets left out: the seeds are gold and train on their labels whatever it says)
        settings = {k: v for k, v in vars(ctx.train).items() if k != "targets"}
        key = hashlib.sha256(json.dumps([sorted(e.id for e in ctx.labeled), ctx.seed, settings],
                                        sort_keys=True).encode()).hexdigest()[:12]
        shared = dataclasses.replace(ctx, workdir=ctx.workdir.parent / "_shared")
        student, record = fit_student(shared, list(ctx.labeled), tag=f"seed-student-{key}")
        state["seed_training"] = {k: record[k] for k in ("best_score", "best_epoch", "stop_reason") if k in record}
        score = ctx.evaluate(student.predict(ctx.dev), ctx.dev) if ctx.dev else {}
        state["round0_dev"] = score
        self._checkpoint(ctx, student, state, main_score(score, ctx.task))
        return student

    # -- step 1 -------------------------------------------------------------------------------
    def _feedback_set(self, student: Any, seeds: list[dict[str, Any]], state: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
        """Seeds judged by the current student, plus last round's kept samples judged as
        ``feedback_from`` says (their predictions were stored when that round ran)."""
        seed_preds = student.predict([Example(f"seed{i}", s["text"], _lab(s["label"])) for i, s in enumerate(seeds)])
        items = [{**s, "pred": p.label} for s, p in zip(seeds, seed_preds)]
        key = "pred_before" if self.opts.feedback_from == "before_training" else "pred_after"
        items += [{"text": s["text"], "label": s["label"], "pred": s[key], "source": "synthetic", "kind": s["kind"]}
                  for s in state["last_batch"]]
        wrong = [it for it in items if _lab(it["pred"]) != _lab(it["label"])]
        right = [it for it in items if _lab(it["pred"]) == _lab(it["label"])]
        rng = random.Random(self._seed(state, 1))
        return (_balanced(wrong, self.opts.show_wrong, rng), _balanced(right, self.opts.show_right, rng),
                {"evaluated": len(items), "wrong": len(wrong), "right": len(right)})

    # -- step 2 -------------------------------------------------------------------------------
    def _analyse(self, ctx: RunContext, meter: BudgetMeter, wrong: list[dict[str, Any]], right: list[dict[str, Any]],
                 history: list[dict[str, Any]], r: int) -> str:
        task = _synth(ctx)
        prompt = load_template(f"evokd_analyze_{task.synthesis_prompts}.v1").render(
            instruction=task.instruction, labels=list(task.labels), descriptions=task.synthesis_descriptions(),
            wrong=[_show(task, s, pred=True) for s in wrong], right=[_show(task, s) for s in right],
            history=history[-self.opts.history:] if self.opts.history else [],
        ).strip()
        last = ""
        for attempt in range(self.opts.max_reasks + 1):
            text = self._ask(meter, prompt, self.opts.analysis_max_tokens, seed=r * 1009 + attempt).text
            last = text
            cleaned = " ".join(text.split())
            if len(cleaned.split()) >= 5:
                return cleaned
            prompt = (prompt + f"\n\n(Your previous reply {text.strip()[:200]!r} was too short to be an analysis. "
                      "Answer in 2 to 4 full sentences.)\nAnalysis:")
        raise TeacherError(
            f"{self.name}, round {r}: the teacher gave no usable weakness analysis after {self.opts.max_reasks + 1} "
            f"attempts (last reply {last[:300]!r}). Use a stronger teacher or raise method_options.{self.name}.max_reasks."
        )

    # -- steps 3-5 ----------------------------------------------------------------------------
    def _synthesise(self, ctx: RunContext, meter: BudgetMeter, analysis: str, filt: SampleFilter, r: int,
                    rec: dict[str, Any], *, plain: bool) -> list[dict[str, Any]]:
        o, task = self.opts, _synth(ctx)
        want = {"plain": o.asked_per_round} if plain else {"hard": o.n_hard, "easy": o.n_easy}
        counts: HygieneCounts = rec["counts"]
        kept: list[dict[str, Any]] = []
        rec["partial"] = kept
        samples_log: list[dict[str, Any]] = []
        rec["samples"] = samples_log
        chunks = -(-sum(want.values()) // o.max_per_call) if o.max_per_call else 1
        for call in range(o.gen_calls_per_round * max(1, chunks)):
            need = {k: n - sum(s["kind"] == k for s in kept) for k, n in want.items()}
            if sum(max(0, v) for v in need.values()) <= 0:
                break
            need = _cap({k: max(0, v) for k, v in need.items()}, o.max_per_call)
            t_gen = time.perf_counter()
            gens = self._generate(ctx, meter, analysis, need, r, call, counts, samples_log)       # 3. write inputs
            rec["generation_seconds"] = rec.get("generation_seconds", 0.0) + time.perf_counter() - t_gen
            texts: list[tuple[str, str]] = []
            gens = [Generated(task.synthesis_text(g.text), g.kind) for g in gens]  # NER: CoNLL-style tokens
            for g in gens:                                                                           # 4. hygiene
                bad = validate_text(g.text, min_words=o.min_words, max_words=o.max_words)
                if bad:
                    counts.dropped["invalid"] += 1
                    samples_log.append({"text": g.text, "kind": g.kind, "round": r, "status": bad})
                else:
                    texts.append((g.text, g.kind))
            reasons = filt.check_batch([t for t, _ in texts])
            fresh = []
            for (text, k), why in zip(texts, reasons):
                if why:
                    counts.dropped[why] += 1
                    samples_log.append({"text": text, "kind": k, "round": r, "status": why})
                else:
                    fresh.append((text, k))
            if not fresh:
                continue
            per = (ctx.labeling.mode == "generate") + _scores(ctx)  # teacher calls per labeled text
            fresh, spent = meter.affordable(fresh, per)
            ids = [f"{self.name}-r{r}-c{call}-{i}" for i in range(len(fresh))]
            t_lab = time.perf_counter()
            labels = label_examples(task, meter, [Unlabeled(i, t) for i, (t, _) in zip(ids, fresh)], ctx.shots,
                                    mode=ctx.labeling.mode, confidence=ctx.labeling.confidence,
                                    max_tokens=ctx.labeling.max_tokens, temperature=ctx.labeling.temperature,
                                    constrained=ctx.labeling.constrained,
                                    stage=f"{self.name}-round{r}", progress=False)            # 5. separate labeling
            rec["labeling_seconds"] = rec.get("labeling_seconds", 0.0) + time.perf_counter() - t_lab
            good = []
            for (text, k), lab in zip(fresh, labels):
                why = "abstained" if lab.abstained else task.synthesis_label_problem(lab, text)
                entry = {"id": lab.example_id, "text": text, "kind": k, "label": lab.label, "round": r,
                         "confidence": lab.confidence, "label_raw": lab.raw, "prompt_id": lab.prompt_id}
                if why:
                    counts.dropped[why] += 1
                    samples_log.append({**entry, "status": why})
                else:
                    samples_log.append({**entry, "status": "kept"})
                    if ctx.train.targets != "hard":  # soft / mix: the teacher's distribution, kept in state.json
                        entry["probs"] = lab.probs
                    good.append(entry)
            filt.accept([s["text"] for s in good])
            kept.extend(good)
            counts.kept += len(good)
            if spent:
                raise BudgetSpent(spent)
        rec.pop("partial", None)
        return kept

    def _generate(self, ctx: RunContext, meter: BudgetMeter, analysis: str, need: dict[str, int], r: int, call: int,
                  counts: HygieneCounts, samples_log: list[dict[str, Any]]) -> list[Any]:
        o, task = self.opts, _synth(ctx)
        n = sum(need.values())
        prompt = load_template(f"evokd_generate_{task.synthesis_prompts}.v1").render(
            instruction=task.instruction, labels=list(task.labels), descriptions=task.synthesis_descriptions(),
            examples=[_show(task, {"text": e.text, "label": e.label}) for e in ctx.labeled[:16]],
            analysis=analysis, n_hard=need.get("hard", 0), n_easy=need.get("easy", 0), n=n,
        ).strip()
        fmt = '"TEXT: "' if "plain" in need else '"HARD: " or "EASY: "'
        constraint = Constraint("grammar", grammar=lines_grammar(need)) if o.grammar else None
        last = ""
        for attempt in range(o.max_reasks + 1):
            reply = self._ask(meter, prompt, o.tokens_per_sample * n, seed=r * 1009 + call * 101 + attempt,
                              constraint=constraint)
            raw = last = reply.text
            if reply.finish_reason == "length" and "\n" in raw:  # the last line was cut at max_tokens: drop it
                raw = raw.rsplit("\n", 1)[0]
            gens = parse_generated(raw, kinds=list(need), labels=task.labels)
            if gens:
                out, taken = [], {k: 0 for k in need}
                for g in gens:
                    k = g.kind if g.kind in need else _fill_kind(need, taken)
                    if k is not None and taken[k] < need[k]:
                        taken[k] += 1
                        out.append(Generated(g.text, k))
                counts.generated += len(out)
                return out
            counts.dropped["unparseable"] += 1
            samples_log.append({"text": raw[:500], "kind": "", "round": r, "status": "unparseable", "attempt": attempt})
            prompt = (prompt + f"\n\n(Your previous reply {raw.strip()[:200]!r} had no line in the asked format. "
                      f"Write one text per line, each line starting with {fmt}.)")
        log.warning("%s round %d call %d: no parseable samples after %d attempts (last reply %r)",
                    self.name, r, call, o.max_reasks + 1, last[:200])
        return []

    def _ask(self, meter: BudgetMeter, prompt: str, max_tokens: int, *, seed: int,
             constraint: Constraint | None = None) -> Any:
        """One sampled generation. ``temperature > 0`` puts the seed into the cache key, so a
        re-ask or another round gets a new sample while a rerun gets the same one back."""
        meter.charge(1)
        if self.opts.chat_prompts:
            prompt = ChatTurn(prompt)
        extra = {"constraint": constraint} if constraint is not None else {}
        reply = meter.generate([prompt], max_tokens=max_tokens, temperature=self.opts.temperature,
                               seed=self._run_seed * 100_003 + seed, **extra)
        return reply[0]

    # -- step 6 -------------------------------------------------------------------------------
    def _train_round(self, ctx: RunContext, student: Any, state: dict[str, Any], batch: list[dict[str, Any]],
                     rec: dict[str, Any]) -> tuple[Any, float]:
        o = self.opts
        if batch:
            before = student.predict([Example(s["id"], s["text"], _lab(s["label"])) for s in batch])
            for s, p in zip(batch, before):
                s["pred_before"] = p.label
            rec["batch_accuracy_before_training"] = _acc_by_kind(batch, "pred_before")
        history = [s for s in state["samples"]]
        rng = random.Random(self._seed(state, 2))
        replay = rng.sample(history, round(o.replay * len(history))) if history and o.replay > 0 else []
        train = _train_examples(ctx, batch + replay)
        if o.replay_gold:
            train += list(ctx.labeled)
        rec.update(n_new=len(batch), n_replay=len(replay), n_train_round=len(train) if batch else 0)
        if not batch:  # nothing new: no training, the round counts towards the plateau
            rec["dev"] = state.get("last_dev") or state.get("round0_dev") or {}
            return student, main_score(rec["dev"], ctx.task)
        rng.shuffle(train)
        epochs = max(o.epochs_per_round, min_epochs(len(train), ctx.train, o.min_steps_per_round))
        student, trained = train_loop(ctx, PlainEpochs(train), n_train=len(train), tag=f"{self.name} round {rec['round']}",
                                      start=student, fixed_epochs=epochs)                # the shared loop, no stopping
        rec.update(epochs=epochs, train_loss=trained["loss"])
        after = student.predict([Example(s["id"], s["text"], _lab(s["label"])) for s in batch])
        for s, p in zip(batch, after):
            s["pred_after"] = p.label
        rec["dev"] = ctx.evaluate(student.predict(ctx.dev), ctx.dev) if ctx.dev else {}
        state["samples"].extend(batch)
        state["last_batch"] = batch
        state["last_dev"] = rec["dev"]
        return student, main_score(rec["dev"], ctx.task)

    # -- step 7 and checkpoints ---------------------------------------------------------------
    def _stop(self, state: dict[str, Any], score: float, r: int) -> str | None:
        if score > state["best_score"]:
            state["best_score"], state["best_round"] = score, r
        if r >= self.opts.rounds:
            return f"all {self.opts.rounds} rounds done"
        if self.opts.patience and r - state["best_round"] >= self.opts.patience:
            return f"dev plateau: no gain in {self.opts.patience} rounds"
        return None

    def _checkpoint(self, ctx: RunContext, student: Any, state: dict[str, Any], score: float) -> None:
        """Save the student into a slot that is neither the last nor the best one, then point the
        state at it (atomic), so a kill at any moment leaves a consistent round to resume from."""
        r = len(state["rounds"])
        busy = {state["last_slot"], state["best_slot"]}
        slot = next(s for s in ("slot-a", "slot-b", "slot-c") if s not in busy)
        student.save(ctx.workdir / slot)
        state["last_slot"] = slot
        if r == 0 or state["best_round"] == r:
            state["best_slot"], state["best_dev"] = slot, state.get("last_dev") or state.get("round0_dev", {})
            if r == 0:
                state["best_score"] = score
        write_json(ctx.workdir / "state.json", state)
        for s in ("slot-a", "slot-b", "slot-c"):
            if s not in (state["last_slot"], state["best_slot"]):
                shutil.rmtree(ctx.workdir / s, ignore_errors=True)

    def _load_state(self, ctx: RunContext) -> dict[str, Any]:
        path = ctx.workdir / "state.json"
        if path.exists():
            state = read_json(path)
            if state.get("options") == self.opts.model_dump() and state.get("feedback") == self.feedback:
                log.info("%s: resuming after round %d", self.name, len(state["rounds"]))
                return state
            log.warning("%s: %s holds a run with other options; starting over", self.name, path)
        return {"options": self.opts.model_dump(), "feedback": self.feedback, "rounds": [], "analyses": [],
                "samples": [], "last_batch": [], "best_score": -1.0, "best_round": 0, "best_slot": "",
                "last_slot": "", "stop_reason": None, "teacher_calls": 0, "teacher_tokens": 0}

    def _seed(self, state: dict[str, Any], salt: int) -> int:
        return self._run_seed * 7919 + len(state["rounds"]) * 31 + salt

    # -- result -------------------------------------------------------------------------------
    def _finish(self, ctx: RunContext, state: dict[str, Any], seconds: float) -> RunResult:
        best = ctx.student_loader(ctx.workdir / state["best_slot"])
        preds = best.predict(ctx.test)
        total = HygieneCounts()
        for rec in state["rounds"]:
            c = rec["counts"]
            total.generated += c["generated"]
            total.kept += c["kept"]
            total.dropped.update({k: v for k, v in c["dropped"].items() if v})
        rows = [s for rec in state["rounds"] for s in rec.get("samples", [])]
        labels = tuple(TeacherLabel(s["id"], s["label"], s.get("confidence"), False, "teacher", s.get("prompt_id", ""),
                                    raw=s.get("label_raw", ""), stage=f"{self.name}-round{s['round']}")
                       for s in state["samples"])
        rounds = [{k: v for k, v in rec.items() if k != "samples"} for rec in state["rounds"]]
        return RunResult(
            self.name, ctx.evaluate(preds, ctx.test), tuple(preds), labels, stop_reason=state["stop_reason"] or "",
            timings={"method_seconds": seconds},
            extra={"n_train": len(state["samples"]) + len(ctx.labeled), "best_round": state["best_round"],
                   "best_dev": state.get("best_dev"), "round0_dev": state.get("round0_dev"),
                   "hygiene": total.to_dict(), "rounds": rounds, "teacher_calls_used": state["teacher_calls"],
                   "teacher_tokens_used": state["teacher_tokens"], "feedback": self.feedback,
                   "best_score": state["best_score"]},
            records={"synthetic": rows},                                                  # report (report.py)
        )


# -- helpers ------------------------------------------------------------------------------------

def _synth(ctx: RunContext) -> Synthesizes:
    """The task as a :class:`Synthesizes` (``run`` checked it)."""
    return cast(Synthesizes, ctx.task)


def _scores(ctx: RunContext) -> bool:
    return bool(ctx.labeling.confidence or ctx.labeling.mode == "score") and isinstance(ctx.task, ScoresOptions)


def _train_examples(ctx: RunContext, samples: list[dict[str, Any]]) -> list[Example]:
    """The synthetic samples as training examples; with ``student.targets`` soft / mix each carries
    the labeling call's distribution over the label set (``Example.soft``). None of them having one
    (teacher.confidence: false) is a :class:`ConfigError` naming the fix; a few without one train
    on their label (as :func:`.training.teacher_examples`)."""
    if ctx.train.targets == "hard":
        return [Example(s["id"], s["text"], _lab(s["label"])) for s in samples]
    missing = [s["id"] for s in samples if not s.get("probs")]
    if samples and len(missing) == len(samples):
        raise ConfigError(f"student.targets: {ctx.train.targets} trains on the teacher's label distribution, but the "
                          f"synthetic samples were labeled without one (e.g. {missing[0]!r}). Set teacher.confidence: "
                          "true (scores the label set) or teacher.labeling: score, or use student.targets: hard")
    if missing:
        log.warning("student.targets: %s: %d of %d synthetic samples have no label distribution; they train on "
                    "their hard label", ctx.train.targets, len(missing), len(samples))
    return [Example(s["id"], s["text"], _lab(s["label"]), soft=dict(s["probs"]) if s.get("probs") else None)
            for s in samples]


def _lab(label: Any) -> Any:
    """A label comparable with ``==`` after a JSON round trip (NER tag lists become tuples)."""
    return tuple(label) if isinstance(label, list) else label


def _show(task: Synthesizes, s: dict[str, Any], *, pred: bool = False) -> dict[str, Any]:
    """A sample as the prompts show it (:meth:`Synthesizes.synthesis_label`: NER labels as
    ``type: text; type: text`` or ``none``)."""
    out = {"text": s["text"], "label": task.synthesis_label(s["text"], s["label"])}
    if pred:
        out["pred"] = task.synthesis_label(s["text"], s["pred"])
    return out


def _shown(s: dict[str, Any], *, pred: bool = False) -> dict[str, Any]:
    """A feedback sample as the round record keeps it (for the report): text, label(s), source."""
    out = {"text": s["text"], "label": s["label"], "source": s.get("source", ""), "kind": s.get("kind", "")}
    if pred:
        out["pred"] = list(s["pred"]) if isinstance(s["pred"], tuple) else s["pred"]
    return out


def lines_grammar(need: dict[str, int]) -> str:
    """GBNF for a generation reply of exactly the asked lines: ``need`` = {kind: count} in the
    order asked, each line ``HARD: ``/``EASY: ``/``TEXT: `` (plain) and a text with no line
    break; the reply ends after the last line."""
    tag = {"hard": "HARD: ", "easy": "EASY: ", "plain": "TEXT: "}
    parts = [f'("{tag[k]}" text "\\n")' + (f"{{{n}}}" if n > 1 else "") for k, n in need.items() if n > 0]
    return "root ::= " + " ".join(parts) + '\ntext ::= [^\\n]+\n'


def _cap(need: dict[str, int], cap: int | None) -> dict[str, int]:
    """At most ``cap`` samples in all, shared out one at a time over the kinds still needed, so a
    capped call asks for hard and easy samples alike: ``{'hard': 25, 'easy': 25}``, 10 ->
    ``{'hard': 5, 'easy': 5}``."""
    if cap is None or sum(need.values()) <= cap:
        return dict(need)
    out = {k: 0 for k in need}
    while sum(out.values()) < cap:
        for k in need:
            if out[k] < need[k] and sum(out.values()) < cap:
                out[k] += 1
    return out


def _fill_kind(need: dict[str, int], taken: dict[str, int]) -> str | None:
    """The kind an untagged ("plain") line fills when hard/easy were asked: the emptiest one."""
    open_kinds = [k for k in need if taken[k] < need[k]]
    return min(open_kinds, key=lambda k: taken[k] / max(1, need[k])) if open_kinds else None


def _acc_by_kind(batch: list[dict[str, Any]], key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind in sorted({s["kind"] for s in batch}):
        group = [s for s in batch if s["kind"] == kind]
        out[kind] = sum(_lab(s[key]) == _lab(s["label"]) for s in group) / len(group)
    return out


def _jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec)
    if isinstance(out.get("counts"), HygieneCounts):
        out["counts"] = out["counts"].to_dict()
    return out


def _make_filter(ctx: RunContext, o: EvoKDOptions, state: dict[str, Any]) -> SampleFilter:
    """The dedupe / leak filter, primed with the gold seeds and every sample kept so far. The embed
    function comes from ``ctx.embedder`` (``build.build_embedder``, set by the build step)."""
    if ctx.embedder is None:
        raise ValueError(f"EvoKD needs RunContext.embedder to build its near-duplicate / leak embedder "
                         f"(embedder={o.embedder!r}); the run context has none. Pass embedder=llmkd.build.build_embedder "
                         "when building a RunContext by hand (llmkd.build.Session sets it).")
    embed = ctx.embedder(o.embedder)
    known = [e.text for e in ctx.labeled] + [s["text"] for s in state["samples"]]
    protected = [e.text for e in ctx.dev] + [e.text for e in ctx.test]
    return SampleFilter(embed=embed, protected=protected, known=known, near_dup=o.near_dup, leak=o.leak,
                        leak_ngram=o.leak_ngram)


def synth_nofeedback(**options: Any) -> EvoKD:
    """The generation-without-feedback baseline: EvoKD's loop without the student-error analysis."""
    if options.get("feedback") is None:
        options["feedback"] = False
    return EvoKD(name="synth_nofeedback", **options)
