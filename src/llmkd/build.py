"""The build step: the one place where a :class:`~llmkd.config.RunConfig` becomes objects.

* :func:`build_teacher` (a ``teacher:`` section -> a backend, resolved through the zoo),
* :func:`build_task` (``task:`` + the label set -> a task family),
* :func:`make_student_factory` (``student:`` -> a fresh-student factory and a loader),
* :func:`build_method` (a registered method name + its ``method_options`` -> a validated method),
* :class:`Session` (the pieces a run's methods share: splits, task, shots, teacher, students).

Teachers, tasks, students and methods know no config; :mod:`llmkd.config` knows no method: the
checks of ``methods`` and ``method_options`` it runs come from :func:`validation_context` here.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from .config import RunConfig, StudentConfig, TaskConfig, TeacherConfig, _format_errors
from .data import check_task_data, full_train, make_splits
from .errors import ConfigError
from .labeling import Demonstrations, fit_demonstrations
from .methods import METHODS, LabelSettings, Method, MethodSpec, RunContext, TrainSettings
from .students import ClassifierStudent, Student, StudentFactory, TaggerStudent
from .tasks import ClassificationTask, NerTask, Seq2SeqTask, Task
from .teachers import BACKENDS, CachedTeacher, Teacher, TeacherCache
from .types import Example

# ---- teacher ---------------------------------------------------------------------------------


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """A teacher for ``cfg``. Local models are resolved through the zoo (pulled if needed) but not
    loaded until the first call that misses the cache. Every backend is imported lazily, so a
    missing extra only matters when that backend is used."""
    from . import zoo

    chat = cfg.chat if cfg.chat is not None else cfg.backend == "openai"
    if cfg.backend == "llamacpp":
        from .teachers.llamacpp import LlamaCppTeacher

        path, sha = zoo.resolve(cfg.model)
        if not path.endswith(".gguf"):
            raise ConfigError(
                f"teacher.model: the llamacpp backend needs a GGUF file, got {cfg.model!r} -> {path}. "
                "Use a zoo name (llmkd models list), a .gguf path, or teacher.backend=hf"
            )
        return LlamaCppTeacher(model_path=path, weights_sha256=zoo.weights_fingerprint(path, sha), chat=chat,
                               n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, seed=cfg.seed, repack=cfg.repack)
    if cfg.backend == "hf":
        from .teachers.hf import HFTeacher

        path, sha = zoo.resolve(cfg.model)
        return HFTeacher(model=path, weights_sha256=zoo.weights_fingerprint(path, sha), gguf_file=cfg.gguf_file,
                         chat=chat)
    if cfg.backend == "openai":
        from .teachers.openai import OpenAITeacher

        o = cfg.openai
        return OpenAITeacher(model=cfg.model, base_url=o.base_url, api_key_env=o.api_key_env,
                             concurrency=o.concurrency, max_retries=o.max_retries, timeout=o.timeout,
                             backoff=o.backoff, chat=chat, seed=cfg.seed, guided=o.guided,
                             max_backoff=o.max_backoff, identify=o.identify)
    if cfg.backend == "vllm":
        from .teachers.vllm_ray import VllmRayTeacher

        path, sha = zoo.resolve(cfg.model)
        v = cfg.vllm
        return VllmRayTeacher(model=path, weights=zoo.weights_fingerprint(path, sha), chat=chat,
                              engine_kwargs=v.engine_kwargs, concurrency=v.concurrency, engine_batch=v.engine_batch,
                              batch_size=v.batch_size, accelerator_type=v.accelerator_type)
    raise ConfigError(f"teacher.backend: allowed values are {BACKENDS} (got {cfg.backend!r})")


def default_cache_path(cfg: RunConfig) -> Path:
    from .zoo import home

    return Path(cfg.cache) if cfg.cache else home() / "teacher.sqlite"


# ---- task ------------------------------------------------------------------------------------


def build_task(cfg: TaskConfig, labels: Sequence[str]) -> Task:
    if cfg.kind == "seq2seq":
        return _build_seq2seq(cfg, labels)
    if cfg.kind == "ner":  # labels = the entity types
        return NerTask(labels=labels, instruction=cfg.instruction, template=cfg.template,
                       label_descriptions=cfg.label_descriptions, aliases=cfg.aliases)
    return ClassificationTask(labels=labels, instruction=cfg.instruction, template=cfg.template,
                              label_descriptions=cfg.label_descriptions, aliases=cfg.aliases)


def _build_seq2seq(cfg: TaskConfig, labels: Sequence[str]) -> Task:
    if cfg.target is None:
        raise ConfigError("task.target: a seq2seq task needs task.target: tree (constituency parsing, "
                          "data.format: brackets) or slots (slot filling, data.format: slots)")
    default = TaskConfig()  # the classification defaults mean "not set" for seq2seq
    return Seq2SeqTask(target=cfg.target, labels=labels,
                       instruction=None if cfg.instruction == default.instruction else cfg.instruction,
                       template=None if cfg.template == default.template else cfg.template)


def choose_shots(labeled: tuple[Example, ...], cfg: RunConfig) -> tuple[Example, ...]:
    """The demonstrations of every prompt: a seeded sample of the labeled set, fixed for the run
    (so all prompts share one prefix), ``task.shots`` of them (default: all, up to max_shots)."""
    shots = random.Random(cfg.seed + 17).sample(list(labeled), _n_shots(labeled, cfg))
    return tuple(shots)


def choose_demonstrations(labeled: tuple[Example, ...], cfg: RunConfig) -> Demonstrations:
    """The demonstrations of the teacher's prompts (``task.demonstrations``), before they are fitted
    to its context: ``fixed``, :func:`choose_shots` in every prompt; ``per_query``, ``task.shots``
    (default: all, up to max_shots) drawn from the labeled set for each item."""
    if cfg.task.demonstrations == "fixed":
        return Demonstrations(choose_shots(labeled, cfg))
    return Demonstrations(tuple(labeled), _n_shots(labeled, cfg), cfg.seed)


def _n_shots(labeled: tuple[Example, ...], cfg: RunConfig) -> int:
    n = cfg.task.shots if cfg.task.shots is not None else cfg.task.max_shots
    return min(n, len(labeled))


# ---- embedders -------------------------------------------------------------------------------


def build_embedder(name: str) -> Callable[..., Any]:
    """The sentence embedder of EvoKD's near-duplicate / leak checks: ``"ngram"`` (no model), else
    an encoder resolved through the zoo (zoo name, local dir or Hugging Face id)."""
    from .synthesis import EncoderEmbedder, ngram_embed

    if name == "ngram":
        return ngram_embed
    from . import zoo

    path, _ = zoo.resolve(name)
    return EncoderEmbedder(str(path))


# ---- students --------------------------------------------------------------------------------


def make_student_factory(cfg: StudentConfig, labels: Sequence[str], task: Any = None,
                         ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    """(factory, loader): ``factory(seed)`` builds a fresh student, ``loader(dir)`` restores one.
    The encoder is resolved through the zoo once (zoo name, local dir or Hugging Face id).
    ``task`` picks the student family: a tree task gets the span parser
    (:class:`~llmkd.students.span_parser.SpanParserStudent`; ``student.parser: seq2seq`` for
    bert2bert), a slot task the slot tagger (:class:`~llmkd.students.slot_tagger.SlotTaggerStudent`;
    ``student.slots: seq2seq`` for bert2bert), a seq2seq student (:class:`Seq2SeqStudent`) has its
    outputs repaired by the task, an NER task gets the token tagger (:class:`TaggerStudent`, ``labels`` = the
    entity types), anything else the classifier. ``student.targets`` / ``temperature`` /
    ``soft_weight`` go to the classifier (soft or mix with a tagger or seq2seq student: ConfigError)."""
    from . import zoo

    kind = getattr(task, "kind", None)
    if cfg.targets != "hard" and kind in ("seq2seq", "ner"):  # RunConfig says so too; this is for StudentConfig alone
        raise ConfigError(f"student.targets: {cfg.targets} is for classification students; a {kind} student trains "
                          "on hard labels (the teacher gives no per-token distribution). Use student.targets: hard")
    span_parser = kind == "seq2seq" and getattr(task, "target", None) == "tree" and cfg.parser == "span"
    if "tree_loss" in cfg.model_fields_set and task is not None and not span_parser:  # set, for another student
        raise ConfigError(f"student.tree_loss: {cfg.tree_loss} is a loss of the span parser (task.target: tree with "
                          "student.parser: span); this student has no tree loss. Remove student.tree_loss")
    path, _ = zoo.resolve(cfg.model)
    if span_parser:
        return _span_parser_factory(cfg, path, labels)
    if kind == "seq2seq" and getattr(task, "target", None) == "slots" and cfg.slots == "tagger":
        return _slot_tagger_factory(cfg, path, task)
    if kind == "seq2seq":
        return _seq2seq_factory(cfg, path, labels, task)
    cls = TaggerStudent if kind == "ner" else ClassifierStudent
    # soft targets (student.targets) are the classifier's; the tagger trains on hard tags
    soft = ({"targets": cfg.targets, "temperature": cfg.temperature, "soft_weight": cfg.soft_weight}
            if cls is ClassifierStudent else {})
    return _factory(cls, cfg, path, labels, soft)


def _factory(cls: Any, cfg: StudentConfig, path: str, labels: Sequence[str], extra: dict[str, Any] | None = None,
             load_extra: dict[str, Any] | None = None) -> tuple[StudentFactory, Callable[[Path], Student]]:
    """(factory, loader) of student class ``cls``: the settings every student takes from
    ``student:``, plus ``extra`` for the constructor and ``load_extra`` for ``cls.load``."""

    def factory(seed: int) -> Student:
        return cls(model=path, labels=labels, max_length=cfg.max_length, batch_size=cfg.batch_size, lr=cfg.lr,
                   weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, seed=seed, device=cfg.device,
                   threads=cfg.threads, **(extra or {}))

    def loader(directory: Path) -> Student:
        return cls.load(directory, device=cfg.device, threads=cfg.threads, **(load_extra or {}))

    return factory, loader


def _span_parser_factory(cfg: StudentConfig, path: str, labels: Sequence[str],
                         ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    from .students.span_parser import SpanParserStudent

    return _factory(SpanParserStudent, cfg, path, labels, {"tree_loss": cfg.tree_loss})


def _slot_tagger_factory(cfg: StudentConfig, path: str, task: Any,
                         ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    from .students.slot_tagger import SlotTaggerStudent, slot_types

    if task.intents:
        raise ConfigError(f"student.slots: tagger predicts slot tags only, but the targets carry intents "
                          f"({', '.join(task.intents[:3])}{', ...' if len(task.intents) > 3 else ''}). Set "
                          "data.with_intent: false, or student.slots: seq2seq")
    return _factory(SlotTaggerStudent, cfg, path, slot_types(task.tags))


def _seq2seq_factory(cfg: StudentConfig, path: str, labels: Sequence[str], task: Any,
                     ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    from .students.seq2seq import Seq2SeqStudent

    return _factory(Seq2SeqStudent, cfg, path, labels,
                    {"extra_tokens": task.vocabulary(), "max_target_length": cfg.max_target_length,
                     "num_beams": cfg.num_beams, "postprocess": task.postprocess},
                    {"postprocess": task.postprocess})


# ---- methods ---------------------------------------------------------------------------------


def method_options(spec: MethodSpec, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` validated by ``spec``'s options model, as the factory's keyword arguments.
    Raises :class:`ConfigError` naming ``method_options.<name>.<field>``."""
    options = dict(options or {})
    if spec.options is None:
        if options:
            raise ConfigError(f"method_options.{spec.name}: {spec.name} takes no options (got {sorted(options)})")
        return {}
    try:
        parsed = spec.options.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "", root=spec.options, prefix=f"method_options.{spec.name}")) from None
    return parsed.model_dump()


def build_method(method: str | MethodSpec, options: dict[str, Any] | None = None) -> Method:
    """The registered method ``method`` (a name or its spec), built with validated ``options``."""
    spec = METHODS[method] if isinstance(method, str) else method
    return spec.factory(**method_options(spec, options))


def check_method_name(name: str) -> str:
    """``name`` if it is a registered method, else ValueError (the run config's message)."""
    if name not in METHODS:
        raise ValueError(f"unknown method; allowed values are {', '.join(sorted(METHODS))}")
    return name


def check_method_options(options: dict[str, dict[str, Any]]) -> None:
    """Every ``method_options`` entry names a registered method and validates against its
    options model (ValueError for a stray name, ConfigError naming the field otherwise)."""
    stray = [m for m in options if m not in METHODS]
    if stray:
        raise ValueError(f"method_options for unknown method(s) {stray}; allowed values are {sorted(METHODS)}")
    for name, opts in options.items():
        method_options(METHODS[name], opts)


def validation_context() -> dict[str, Any]:
    """The checks :class:`~llmkd.config.RunConfig` runs on ``methods`` and ``method_options`` (a
    caller may pass its own as pydantic's validation ``context``)."""
    return {"method_name": check_method_name, "method_options": check_method_options}


# ---- session ---------------------------------------------------------------------------------


class Session:
    """The pieces shared by the methods of one run, built from ``cfg``: the splits (and the pool's
    gold vault, for reporting only), the task and the shots at once; the teacher (with its cache)
    and the student factory on first use."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        check_task_data(cfg.task.kind, cfg.task.target, cfg.data)  # before any file is read
        self.splits, self.vault = make_splits(cfg.data, cfg.seed)
        self.task = build_task(cfg.task, self.splits.labels)
        self.shots = choose_shots(self.splits.labeled, cfg)
        self.human_labels = _human_labels(cfg, self.splits.pool, self.task)
        self._demonstrations: Demonstrations | None = None
        self._teacher: CachedTeacher | None = None
        self._students: Any = None

    @property
    def _vault(self) -> Any:  # the name api._Session used (bench scripts read it)
        return self.vault

    @property
    def teacher(self) -> CachedTeacher:
        if self._teacher is None:
            from . import distributed

            def build() -> CachedTeacher:
                return CachedTeacher(build_teacher(self.cfg.teacher), TeacherCache(default_cache_path(self.cfg)))

            # accelerate launch: asked on the main process only, its answers broadcast to the others
            self._teacher = distributed.MainProcessTeacher(build) if distributed.active() else build()
        return self._teacher

    @property
    def demonstrations(self) -> Demonstrations:
        """The demonstrations the teacher is shown (``task.demonstrations``; :attr:`shots` where
        fixed), fitted to its context (:func:`llmkd.labeling.fit_demonstrations`, with a warning
        when some are dropped)."""
        if self._demonstrations is None:
            texts = [x.text for x in (*self.splits.pool, *self.splits.test)]
            self._demonstrations = fit_demonstrations(self.task, self.teacher,
                                                      choose_demonstrations(self.splits.labeled, self.cfg),
                                                      max_tokens=self.cfg.teacher.max_tokens, texts=texts)
        return self._demonstrations

    @property
    def teacher_shots(self) -> tuple[Example, ...]:
        """The shots the teacher is shown with ``task.demonstrations: fixed``: :attr:`shots` fitted to
        its context. With ``per_query`` there is no one set: a :class:`~llmkd.errors.ConfigError`
        (use :attr:`demonstrations`)."""
        if self.demonstrations.k is not None:
            raise ConfigError("task.demonstrations: per_query draws each item's demonstrations (Session.demonstrations"
                              ".for_item); there is no one set of teacher shots. Use Session.demonstrations, or set "
                              "task.demonstrations: fixed")
        return self.demonstrations.examples

    @property
    def built_teacher(self) -> CachedTeacher | None:
        """The teacher if a method has used it, else None (without building one)."""
        return self._teacher

    @property
    def students(self) -> tuple[StudentFactory, Callable[[Path], Student]]:
        if self._students is None:
            self._students = make_student_factory(self.cfg.student, self.splits.labels, task=self.task)
        return self._students

    def context(self, method: str, workdir: Path) -> RunContext:
        cfg = self.cfg
        labeled = self.splits.labeled
        if method == "supervised_full":
            labeled = full_train(cfg.data, self.splits, self.vault)
        factory, loader = self.students
        uses_teacher = METHODS[method].uses_teacher
        return RunContext(
            task=self.task, teacher=self.teacher if uses_teacher else None,
            student_factory=factory, student_loader=loader, labeled=labeled, pool=self.splits.pool,
            dev=self.splits.dev, test=self.splits.test, shots=self.demonstrations if uses_teacher else self.shots,
            workdir=workdir, seed=cfg.seed,
            train=TrainSettings(epochs=cfg.student.epochs, patience=cfg.student.patience,
                                min_steps=cfg.student.min_steps, batch_size=cfg.student.batch_size,
                                max_steps=cfg.student.max_steps,
                                class_balance=cfg.student.class_balance, targets=cfg.student.targets),
            labeling=LabelSettings(mode=cfg.teacher.labeling, confidence=cfg.teacher.confidence,
                                   max_tokens=cfg.teacher.max_tokens, temperature=cfg.teacher.temperature,
                                   constrained=cfg.teacher.constrained),
            progress=cfg.progress, embedder=build_embedder,
            human_labels=self.human_labels if uses_teacher else {},
        )


def _human_labels(cfg: RunConfig, pool: Sequence[Any], task: Any) -> dict[str, Any]:
    """``data.human_labels`` (:mod:`llmkd.review`): pool id -> a person's label; {} when unset."""
    if not cfg.data.human_labels:
        return {}
    if cfg.task.kind == "seq2seq":
        raise ConfigError("data.human_labels: human labels are for classification and ner runs; this run's task.kind "
                          "is seq2seq. Remove data.human_labels")
    from .review import read_human_labels

    return read_human_labels(cfg.data.human_labels, pool, task)


__all__ = ["build_teacher", "build_task", "make_student_factory", "build_method", "method_options",
           "check_method_name", "check_method_options", "validation_context", "choose_shots", "choose_demonstrations",
           "default_cache_path", "Session"]
