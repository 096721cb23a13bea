"""The public entry points the CLI composes: :func:`run`, :func:`label`, :func:`dry_run`,
:func:`evaluate`. Each takes a :class:`~llmkd.config.RunConfig` (or a run directory).

A run directory is named after ``cfg.name`` under ``cfg.output_dir``; running the same config
again continues it: finished methods are loaded, teacher calls come from the cache, and training
resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import Session, build_method, build_task, build_teacher
from .build import choose_shots, default_cache_path  # noqa: F401 - moved to llmkd.build; importable from here too
from .config import RunConfig, dump_config
from .data import GoldVault, make_splits
from .errors import ConfigError
from .methods import METHODS
from .report import (missing_files, read_jsonl, read_pool_labels, start_run_dir, write_manifest, write_method_result, write_pool_labels,
                     write_result, write_run_labels, write_run_report)
from .io import read_json, run_lock
from .report import manifest, write_json, write_jsonl  # noqa: F401 - importable from here, as before
from .review import file_sha256, gold_budget, read_human_labels
from .students.checkpoint import drop_optimizer_state
from .tasks.base import ScoresOptions
from .teachers import CachedTeacher
from .teachers.base import common_prefix
from .teachers.usage import counters as usage_counters, since as usage_since
from .types import TeacherLabel

log = logging.getLogger(__name__)

@dataclass
class RunSummary:
    run_dir: Path
    results: dict[str, dict[str, Any]]
    report: str


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to mix two configs' results in one run directory. A directory whose earlier run
    stopped before it wrote anything but its config (bad data, an unknown model) holds nothing to
    protect: the corrected config takes it over."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    if not any(p.is_file() and p != path for p in run_dir.rglob("*")):
        return
    import yaml

    old = yaml.safe_load(path.read_text())
    try:  # fields added to the config schema since that run started compare by their defaults
        old = RunConfig.model_validate(old).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a field since removed or renamed: compare the raw text
        pass
    new = cfg.model_dump(mode="json")
    for d in (old, new):  # fields that do not change what a run computes
        for key in ("progress", "methods", "output_dir", "cache"):  # where it is (relative or absolute) is not what
            d.pop(key, None)
        if isinstance(d.get("student"), dict):
            d["student"].pop("threads", None)  # how many cores torch uses here, as teacher.n_threads below
        if isinstance(d.get("teacher"), dict):
            d["teacher"].pop("gate", None)  # whether to stop on a weak teacher: a stopped run goes on with warn
            d["teacher"].pop("gate_max_dev", None)  # how much of dev the gate labels: the methods compute the same
            d["teacher"].pop("price_per_mtok", None)  # what the tokens cost: shown, not computed with
            for key in ("n_threads", "repack"):  # how fast llama.cpp runs here; its answers are cached
                d["teacher"].pop(key, None)
        if isinstance(d.get("teacher"), dict) and isinstance(d["teacher"].get("openai"), dict):
            d["teacher"]["openai"].pop("base_url", None)  # where the server runs: the cache keys what it serves
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ConfigError(
            f"{run_dir} holds a run made with a different config (differs in: {', '.join(diff)}). "
            f"Give this run another name (--set name=...) or delete {run_dir} to start over."
        )


_Session = Session  # the old private name (kept for scripts that reached into it)


def pool_quality(labels: list[TeacherLabel], vault: GoldVault, task: Any = None) -> dict[str, Any]:
    if not labels:
        return {}
    answered = [lab for lab in labels if not lab.abstained]
    right = sum(lab.label == vault.label_of(lab.example_id) for lab in answered)
    out = {
        "pool size": len(labels),
        "abstentions": len(labels) - len(answered),
        "pseudo-label accuracy (answered)": right / len(answered) if answered else 0.0,
        "pseudo-label accuracy (all, abstention = wrong)": right / len(labels),
    }
    if getattr(task, "kind", None) == "ner":  # accuracy above = whole-sentence exact match; add span scores
        scores = task.score([vault.label_of(lab.example_id) for lab in labels], [lab.label for lab in labels])
        out.update({f"pseudo-label span {k}": scores[k] for k in ("f1", "precision", "recall")})
        out.update(task.label_stats(labels))
    return out


def _teacher_counters(t: CachedTeacher | None) -> dict[str, float]:
    """The teacher's running counters, under the names a method's ``timings`` gives their change
    (with :mod:`llmkd.teachers.usage`'s tokens sent and constraint counts)."""
    own = ((t.seconds + t.cached_seconds, t.misses, t.hits, t.prompt_tokens, t.completion_tokens) if t is not None
           else (0.0, 0, 0, 0, 0))
    return {**dict(zip(("teacher_seconds", "teacher_calls", "cache_hits", "prompt_tokens", "completion_tokens"), own)),
            **usage_counters(t)}


def _warnings(run_dir: Path, cfg: RunConfig, pool_labels: list[TeacherLabel], labeled: Any,
              gate: dict[str, Any] | None = None) -> list[str]:
    """Suspicious results (:mod:`llmkd.diagnostics`), logged and returned for the report; the
    teacher gate's warning (logged when the gate ran) first."""
    from .diagnostics import run_warnings, training_warnings

    found = [] if cfg.task.kind != "classification" else run_warnings(  # a target string or tag tuple is no class
        run_dir, cfg.methods, [lab.label for lab in pool_labels if not lab.abstained], [e.label for e in labeled])
    found += training_warnings(run_dir, cfg.methods, cfg.student.epochs)
    for w in found:
        log.warning("%s", w)
    return ([gate["warning"]] if gate and gate.get("warning") else []) + found


def _gate(cfg: RunConfig, sess: Session, run_dir: Path) -> dict[str, Any] | None:
    """The teacher gate (:mod:`llmkd.gate`) before any method runs, while a method that uses the
    teacher is still to run; once they have all finished, the gate's record of that run."""
    from .gate import teacher_gate

    asking = [m for m in cfg.methods if METHODS[m].uses_teacher]
    if asking and all((run_dir / m / "result.json").exists() for m in asking):
        return _earlier_gate(run_dir)
    return teacher_gate(cfg, sess, run_dir)


def _earlier_gate(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    return read_json(path).get("gate") if path.exists() else None


def run(cfg: RunConfig, *, executor: str = "local", address: str | None = None) -> RunSummary:
    """Run every method in ``cfg.methods`` and write the run directory (resumable).

    Under ``accelerate launch`` (:mod:`llmkd.distributed`) the students train data-parallel, the
    teacher is asked on the main process only, and only the main process writes the run
    directory (the others work in a private copy of it).

    ``executor="ray"``: a method's independent students (MCKD's part students of each stage) train
    as parallel Ray tasks on the cluster ``address`` (None: ``RAY_ADDRESS``, else a local one),
    one per ``student.threads`` CPUs (a GPU each with ``student.device: cuda``); this process alone
    asks the teacher and writes the run directory (:mod:`llmkd.ray_students`). The results are
    those of ``executor="local"``."""
    students = _student_executor(cfg, executor, address)  # a missing extra is named before anything is written
    try:
        with _main_holds(run_dir_for(cfg)):
            return _run(cfg, students)
    finally:
        if students is not None:
            students.close()


def _main_holds(run_dir: Path) -> Any:
    """:func:`~llmkd.io.run_lock` on ``run_dir`` in the process that writes it (the main one of a
    data-parallel run; the others work in private copies)."""
    from contextlib import nullcontext

    from . import distributed

    return run_lock(run_dir) if distributed.is_main() else nullcontext()


def check_executor(executor: str) -> None:
    """A :class:`ConfigError` unless ``executor`` is ``local`` or ``ray`` (``llmkd run`` / ``label``
    ``--executor``, and the benchmarks' cells)."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor: allowed values are 'local' and 'ray' (got {executor!r})")


def _student_executor(cfg: RunConfig, executor: str, address: str | None) -> Any:
    """None for ``executor="local"``; a :class:`~llmkd.ray_students.RayStudents` for ``"ray"``
    (the missing extra named before anything runs)."""
    from . import distributed

    check_executor(executor)
    if executor == "local":
        return None
    if distributed.active():
        raise ConfigError("--executor ray trains students as Ray tasks, accelerate launch trains each one on many "
                          "processes: use one of the two (drop --executor ray, or run without accelerate launch)")
    from .ray_students import RayStudents

    device = cfg.student.device
    return RayStudents(address=address, cpus_per_task=cfg.student.threads or 1,
                       gpus_per_task=1 if device.startswith("cuda") else 0)


def _run(cfg: RunConfig, students: Any) -> RunSummary:
    from . import distributed

    run_dir = run_dir_for(cfg)

    def start() -> None:
        _check_same_config(run_dir, cfg)
        start_run_dir(run_dir, dump_config(cfg))

    distributed.on_main(start)
    run_dir = distributed.private_run_dir(run_dir)  # run_dir itself on the main process
    if not distributed.is_main():
        cfg = cfg.model_copy(update={"progress": False})  # one set of progress bars: the main process's
    sess = Session(cfg)
    hashes: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    gate = _gate(cfg, sess, run_dir)
    for name in cfg.methods:
        wd = run_dir / name
        wd.mkdir(exist_ok=True)
        done = wd / "result.json"
        if done.exists():
            earlier = read_json(done)
            missing = missing_files(wd, earlier)
            if not missing:
                log.info("%s: finished in an earlier run; loading its result", name)
                results[name] = earlier
                continue
            log.warning("%s: %s of its finished run is missing; running it again (teacher answers and trained "
                        "students come back from the cache and its checkpoints)", name, ", ".join(missing))
        ctx = sess.context(name, wd)
        ctx.executor = students
        before = _teacher_counters(sess.built_teacher)
        log.info("running %s", name)
        res = build_method(name, cfg.method_options.get(name)).run(ctx)
        timings = dict(res.timings)
        if METHODS[name].uses_teacher:
            timings["n_prompts"] = len(res.labels)
            timings.update(usage_since(before, _teacher_counters(sess.built_teacher)))
        results[name] = write_method_result(wd, res, ctx.test, timings)
        freed = drop_optimizer_state(wd)  # finished methods never train again (see the function)
        if freed:
            log.info("%s: dropped %.0f MB of optimizer state from its finished students", name, freed / 2**20)
    if sess.built_teacher is not None:
        hashes["teacher"] = sess.built_teacher.fingerprint
    if cfg.data.human_labels:
        hashes["human_labels"] = file_sha256(cfg.data.human_labels)  # which corrections this run used
    write_manifest(run_dir, cfg, hashes)
    pool_labels = read_pool_labels(run_dir)
    write_run_labels(run_dir, sess.splits.labeled, sess.splits.pool, pool_labels)
    stats = pool_quality(pool_labels, sess.vault, sess.task)  # pseudo-label quality vs the pool's gold: reporting only
    stats.update(gold_budget(sess.splits.labeled, sess.splits.dev, sess.human_labels, pool_labels))
    warnings = _warnings(run_dir, cfg, pool_labels, sess.splits.labeled, gate)
    report = write_run_report(run_dir, cfg, results, stats, warnings, sess.task, gate=gate, gold=sess.vault.label_of)
    return RunSummary(run_dir, results, report)


def label(cfg: RunConfig, *, executor: str = "local", address: str | None = None,
          workers: int | None = None) -> tuple[Path, list[TeacherLabel]]:
    """Label the unlabeled pool only (no training); writes RUN_DIR/vanilla/labels.jsonl and the
    manifest (with the teacher's fingerprint; :mod:`llmkd.label_export` writes it as provenance).

    ``executor="ray"``: the cache misses are labeled on a Ray cluster (``address``; ``workers``
    actors, default one per ``teacher.n_threads`` CPUs), the driver writes the cache
    (:mod:`llmkd.ray_labeling`); the labels are those of a local run."""
    check_executor(executor)
    with run_lock(run_dir_for(cfg)):
        return _label(cfg, executor, address, workers)


def _label(cfg: RunConfig, executor: str, address: str | None, workers: int | None) -> tuple[Path, list[TeacherLabel]]:
    run_dir = run_dir_for(cfg)
    _check_same_config(run_dir, cfg)
    start_run_dir(run_dir, dump_config(cfg))
    sess = Session(cfg)
    ctx = sess.context("vanilla", run_dir)
    if executor == "ray":
        from functools import partial

        from .ray_labeling import label_on_ray

        s = ctx.labeling
        labels = label_on_ray(sess.task, sess.teacher, partial(build_teacher, cfg.teacher), sess.splits.pool, ctx.shots,
                              mode=s.mode, confidence=s.confidence, max_tokens=s.max_tokens,
                              temperature=s.temperature, constrained=s.constrained, stage="teacher-pool",
                              desc="teacher on pool", progress=cfg.progress, address=address, workers=workers,
                              cpus_per_worker=(cfg.teacher.n_threads or 1) if cfg.teacher.backend == "llamacpp" else 1)
        if ctx.human_labels:  # data.human_labels, as ctx.label gives them on the local path
            from .review import with_human_labels

            labels = with_human_labels(labels, ctx.human_labels)
    else:
        labels = ctx.label(sess.splits.pool, stage="teacher-pool", desc="teacher on pool")
    write_pool_labels(run_dir, labels)
    write_manifest(run_dir, cfg, {"teacher": sess.teacher.fingerprint})
    return run_dir, labels


def dry_run(cfg: RunConfig, *, calibrate: bool = True) -> dict[str, Any]:
    """What labeling would cost: prompts, prompt tokens, and for local teachers a time estimate
    from a short measured calibration on this machine (3 prompts). Tokens are counted on a
    sample of up to 50 prompts by the teacher's tokenizer (an OpenAI-compatible server's
    ``/tokenize``, else its reported usage: see :meth:`OpenAITeacher.count_tokens`); with
    ``teacher.price_per_mtok``, also the dollars (:func:`_dry_run_cost`)."""
    from .gate import gate_dev, skip_reason

    sess = Session(cfg)
    items = list(sess.splits.pool)
    if "teacher" in cfg.methods:
        items += list(sess.splits.test)
    demos = sess.demonstrations
    prompts = [sess.task.render(x.text, demos.for_item(x)) for x in items]
    teacher = build_teacher(cfg.teacher)
    sample = prompts[:: max(1, len(prompts) // 50)][:50]
    tok = [teacher.count_tokens(p) for p in sample]
    mean_tok = sum(tok) / len(tok)
    shared = _shared_prefix_tokens(teacher, prompts[:2]) if demos.k is None else _reused_tokens(teacher, prompts[:51])
    out: dict[str, Any] = {
        "prompts": len(prompts), "prompt_tokens": int(mean_tok * len(prompts)),
        "prompt_tokens_after_prefix_reuse": int((mean_tok - shared) * len(prompts) + shared) if cfg.teacher.backend != "openai" else None,
        "max_new_tokens_per_prompt": cfg.teacher.max_tokens, "shots": demos.per_prompt,
        "demonstrations": demos.mode,
        "labeling": cfg.teacher.labeling, "confidence_scoring": cfg.teacher.confidence,
        "gate_dev_prompts": 0 if skip_reason(cfg, sess) else len(gate_dev(cfg, sess)),  # llmkd run's teacher gate
    }
    out.update(_dry_run_cost(cfg, teacher, sess, len(prompts), mean_tok))
    if calibrate and cfg.teacher.backend != "openai":
        probe = prompts[:3]
        t0 = time.perf_counter()
        teacher.generate(probe[:1], max_tokens=cfg.teacher.max_tokens)  # load + shared prefix
        t1 = time.perf_counter()
        for p in probe[1:]:
            teacher.generate([p], max_tokens=cfg.teacher.max_tokens)
            if cfg.teacher.confidence and isinstance(sess.task, ScoresOptions):  # NER has no label set to score
                teacher.score_options([p], sess.task.options())
        per = (time.perf_counter() - t1) / max(1, len(probe) - 1)
        out["seconds_per_prompt_measured"] = round(per, 3)
        out["estimated_seconds"] = round((t1 - t0) + per * len(prompts), 1)
    return out


def _dry_run_cost(cfg: RunConfig, teacher: Any, sess: Session, n: int, mean_tok: float) -> dict[str, Any]:
    """The dry run's token budget of the whole labeling, and its dollars at
    ``teacher.price_per_mtok``: generation (each prompt, at most ``max_tokens`` out) where
    ``teacher.labeling: generate``; option scoring where ``score`` or ``teacher.confidence``
    (OpenAI-compatible servers: one request per prompt; plain-text echo scoring sends the prompt
    once per option, so it is counted so). An upper bound on completion tokens: replies stop
    early."""
    from .teachers.usage import dollars

    t = cfg.teacher
    prompt_tokens = completion_tokens = 0.0
    if t.labeling == "generate":
        prompt_tokens += mean_tok * n
        completion_tokens += t.max_tokens * n
    options = sess.task.options() if isinstance(sess.task, ScoresOptions) else None
    if options and (t.labeling == "score" or t.confidence):
        per_prompt = 1 if (t.backend != "openai" or getattr(teacher, "chat", True)) else len(options)
        prompt_tokens += mean_tok * n * per_prompt
        completion_tokens += (n * per_prompt) if t.backend == "openai" else 0
    out: dict[str, Any] = {
        "prompt_tokens_counted_by": getattr(teacher, "token_count_source", None) or "the teacher's tokenizer",
        "labeling_prompt_tokens": int(prompt_tokens), "labeling_completion_tokens_at_most": int(completion_tokens),
    }
    cost = dollars(t.price_per_mtok, prompt_tokens, completion_tokens)
    if cost is not None:
        out["labeling_usd_at_most"] = round(cost, 4)
    return out


def _shared_prefix_tokens(teacher: Any, prompts: list[str]) -> int:
    """Tokens of the part every prompt shares: the rendered prompt's own boundary
    (:class:`~llmkd.tasks.base.Prompt`), else the common prefix of the first two."""
    if not prompts:
        return 0
    first = prompts[0]
    n = getattr(first, "shared", None)
    if n is None:
        n = common_prefix(first, prompts[1]) if len(prompts) > 1 else 0
    return teacher.count_tokens(first[:n]) if n else 0


def _reused_tokens(teacher: Any, prompts: list[str]) -> float:
    """Tokens a prompt has in common with the one before it, on average over ``prompts`` (the ones
    a local backend's prefix reuse does not evaluate again): with demonstrations drawn per query,
    the instruction and the leading demonstrations two draws share."""
    pairs = list(zip(prompts, prompts[1:]))
    shared = [common_prefix(str(a), str(b)) for a, b in pairs]
    return sum(teacher.count_tokens(a[:n]) if n else 0 for (a, _), n in zip(pairs, shared)) / max(1, len(pairs))


def evaluate(run_dir: str | Path) -> RunSummary:
    """Re-score every finished method's saved test predictions with the current scorer and
    rewrite metrics.json and report.md (no teacher calls, no training)."""
    from .config import run_config

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    with run_lock(run_dir):
        return _evaluate(run_dir, cfg)


def _evaluate(run_dir: Path, cfg: RunConfig) -> RunSummary:
    splits, vault = make_splits(cfg.data, cfg.seed)
    task = build_task(cfg.task, splits.labels)
    results: dict[str, dict[str, Any]] = {}
    for name in cfg.methods:
        res_path = run_dir / name / "result.json"
        if not res_path.exists():
            continue
        res = read_json(res_path)
        preds = read_jsonl(run_dir / name / "predictions.jsonl")
        res["metrics"] = task.score([p["gold"] for p in preds], [p["pred"] for p in preds])
        results[name] = res
        write_result(run_dir / name, res)
    pool_labels = read_pool_labels(run_dir)
    stats = pool_quality(pool_labels, vault, task)
    human = read_human_labels(cfg.data.human_labels, splits.pool, task) if cfg.data.human_labels else {}
    stats.update(gold_budget(splits.labeled, splits.dev, human, pool_labels))
    gate = _earlier_gate(run_dir)
    warnings = _warnings(run_dir, cfg, pool_labels, splits.labeled, gate)
    report = write_run_report(run_dir, cfg, results, stats, warnings, task, gate=gate, gold=vault.label_of)
    return RunSummary(run_dir, results, report)
