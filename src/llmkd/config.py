"""Run configuration: pydantic models, YAML loading and ``--set a.b=c`` overrides.

Every validation error is re-raised as :class:`ConfigError` naming the field path, the allowed
values and the value given, e.g.::

    student.epochs: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import ConfigError

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """How the train file is split into labeled / unlabeled pool / dev."""

    labeled_per_class: int | None = Field(8, ge=1, description="k gold examples per class")
    labeled_n: int | None = Field(None, ge=1, description="or n gold examples in total")
    pool_size: int | None = Field(1000, ge=1, description="unlabeled pool size; null = the rest")
    dev_per_class: int | None = Field(8, ge=1, description="small labeled dev set, per class")
    dev_n: int | None = Field(None, ge=1, description="data without classes (NER, seq2seq): dev set size in total")
    test_size: int | None = Field(None, ge=1, description="subsample the test set; null = all")

    @model_validator(mode="after")
    def _one_labeled_size(self) -> SplitConfig:
        # giving only the total (labeled_n / dev_n) replaces the per-class default of 8
        unset = {per: None for per, total in (("labeled_per_class", "labeled_n"), ("dev_per_class", "dev_n"))
                 if getattr(self, total) is not None and per not in self.model_fields_set}
        for name in unset:  # in place: pydantic ignores a returned copy when called as SplitConfig(...)
            object.__setattr__(self, name, None)
        if self.dev_per_class is not None and self.dev_n is not None:
            raise ValueError(
                f"set either dev_per_class or dev_n, not both (got dev_per_class={self.dev_per_class}, "
                f"dev_n={self.dev_n}); set the other one to null"
            )
        if self.labeled_per_class is not None and self.labeled_n is not None:
            raise ValueError(
                "set either labeled_per_class or labeled_n, not both "
                f"(got labeled_per_class={self.labeled_per_class}, labeled_n={self.labeled_n}); "
                "set the other one to null"
            )
        if self.labeled_per_class is None and self.labeled_n is None:
            raise ValueError("set labeled_per_class (k per class) or labeled_n (n in total)")
        return self


class DataConfig(_Strict):
    train: str = Field(..., description="path of the training file (jsonl, csv, tsv, label_text, parquet, ...) or "
                                        "folder (datasets, seq_in_out, ...)")
    test: str = Field(..., description="path of the test file")
    dev: str | None = Field(None, description="optional dev file; else dev is drawn from train")
    format: Literal["auto", "jsonl", "csv", "tsv", "label_text", "parquet", "datasets", "brackets", "slots", "conll",
                    "seq_in_out"] = Field(
        "auto", description="conll / seq_in_out: token-tagged NER data (a CoNLL column file / a seq.in+seq.out folder); "
        "parquet / datasets (a save_to_disk or load_dataset folder): classification, or NER where the label column "
        "holds tag lists (docs/data.md); auto: by extension, a save_to_disk folder is datasets")
    encoding: str = Field("utf-8", description="text encoding of the files, e.g. latin-1")
    text_field: str = "text"
    label_field: str = "label"
    separator: str = Field(" ", description="label_text format: what separates label and text")
    quoting: Literal["auto", "none", "quoted", "multiline"] = Field(
        "auto", description="csv / tsv: how quotes are read. none: a quote is plain text; quoted: a value that "
        "starts with \" runs to its closing \" (\"\" inside is a quote), across lines only if no line inside it "
        "splits into as many fields as the header (a row: a stray quote is an error, never rows swallowed); "
        "multiline: as quoted, without that check; auto: quoted for csv, none for tsv")
    tag_column: int | None = Field(
        None, ge=2, description="conll: the column that holds the NER tags (1 = the token); default: the last")
    columns: dict[Literal["train", "dev", "test"], list[str]] = Field(
        default_factory=dict, description="csv / tsv files without a header row: the names of their columns, per "
        "split, e.g. {train: [text, label], test: [label, title, text]} (AG News); a list names the columns of every "
        "split's file; a split not named here has a header row")
    label_regex: str | None = Field(None, description="regex whose first group is the label")
    label_map: dict[str, str] = Field(default_factory=dict, description="raw label -> class name")
    labels: list[str] | None = Field(None, description="the label set, in order; default: from data")
    split: SplitConfig = Field(default_factory=SplitConfig)
    members: dict[Literal["train", "dev", "test"], str | list[str]] = Field(
        default_factory=dict, description="brackets: which files of a folder / .tar.gz each split reads: glob "
        "patterns over file names, or the path of a file of document ids (relative to the data file's folder)")
    dataset_split: dict[Literal["train", "dev", "test"], str] = Field(
        default_factory=dict, description="datasets: which split of a DatasetDict each llmkd split reads, e.g. "
        "{dev: validation_matched}; default: train, test, and for dev the first of validation, dev, valid")
    tree_labels: bool = Field(False, description="brackets: keep constituent labels in the target (labeled F1)")
    with_intent: bool = Field(False, description="slots: prefix the target with the intent ('label' file)")
    human_labels: str | None = Field(
        None, description="a JSONL file of human labels of pool items (`llmkd review import` writes "
        "RUN_DIR/review/human_labels.jsonl): they replace the teacher's labels of those items and count as gold "
        "(docs/review.md); classification and ner")

    @field_validator("label_map", mode="before")
    @classmethod
    def _integer_keys(cls, v: Any) -> Any:
        # YAML reads `{0: negative}` with integer keys; raw labels are matched as text ("0", parquet class ids too)
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: x for k, x in v.items()} \
            if isinstance(v, dict) else v

    @field_validator("columns", mode="before")
    @classmethod
    def _columns_everywhere(cls, v: Any) -> Any:
        return {split: v for split in ("train", "dev", "test")} if isinstance(v, list) else v

    @field_validator("columns")
    @classmethod
    def _columns_named(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for split, names in v.items():
            if not names or any(not n.strip() for n in names) or len(set(names)) != len(names):
                raise ValueError(f"data.columns.{split}: {names!r}; give each column a distinct, non-empty name, "
                                 "e.g. [text, label]")
        return v

    @model_validator(mode="after")
    def _format_options(self) -> DataConfig:
        for name, formats in (("quoting", ("csv", "tsv")), ("tag_column", ("conll",)), ("columns", ("csv", "tsv")),
                               ("dataset_split", ("datasets",))):
            if name in self.model_fields_set and getattr(self, name) not in (None, "auto", {}) \
                    and self.format not in ("auto", *formats):
                raise ValueError(f"data.{name} applies to data.format {' / '.join(formats)} only, but data.format "
                                 f"is {self.format!r}; remove data.{name}")
        return self


class TaskConfig(_Strict):
    kind: Literal["classification", "seq2seq", "ner"] = "classification"
    target: Literal["tree", "slots"] | None = Field(None, description="seq2seq: what is generated")
    template: str = Field(
        "classify.v2", description="classification prompt: classify.v2 shows each text as delimited data "
        "(one line, field markers neutralised; docs/results/reliability.md), classify.v1 as written (the "
        "template of the results in docs/results made before 2026-12-06)")
    instruction: str = "Classify the text into one of the labels."
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict, description="reply word -> label")
    shots: int | None = Field(None, ge=0, description="demonstrations per prompt; null = all labeled, capped by max_shots")
    max_shots: int = Field(32, ge=0)
    demonstrations: Literal["fixed", "per_query"] = Field(
        "fixed", description="fixed = one seeded draw of task.shots demonstrations for every prompt (one shared "
        "prefix, which llama.cpp reuses); per_query = a draw of its own for each item, seeded by (seed, item id), "
        "shown in the labeled set's order (the MCKD paper's 30 random demonstrations per query; slower: "
        "docs/results/demo_sampling.md)")

    @model_validator(mode="after")
    def _kind_defaults(self) -> TaskConfig:
        for name, value in KIND_DEFAULTS.get(self.kind, {}).items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)  # in place (frozen model; a returned copy is ignored by __init__)
        return self


# task.kind -> defaults of the task fields a config leaves out (the field defaults are classification's)
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "ner": {"template": "ner.v1", "instruction": "Find the named entities in the sentence."},
}


class OpenAIConfig(_Strict):
    base_url: str | list[str] = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = Field("OPENAI_API_KEY", description="name of the env var holding the key")
    concurrency: int = Field(4, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout: float = Field(60.0, gt=0)
    backoff: float = Field(0.5, ge=0, description="first retry delay in seconds, doubled each try")
    max_backoff: float = Field(30.0, gt=0, description="longest delay between two retries in seconds: the "
                                                       "doubling stops there (each delay is 0-10% shorter at random)")
    identify: bool = Field(True, description="key the cache by the model the server reports at GET /models "
                                             "(id, root, owned_by, size, ...), so that another model served under "
                                             "the same name is asked afresh; false: by teacher.model alone "
                                             "(cached answers are then reused without asking the server)")
    guided: Literal["vllm", "llamacpp", "openai", "none"] = Field(
        "vllm", description="how a constraint (teacher.constrained) is sent: vllm = structured_outputs to vLLM "
                            ">= 0.12 and guided_* to older vLLM (chosen per server by GET /version, else a probe); "
                            "llamacpp = the llama.cpp server's grammar/json_schema; openai = response_format; none = "
                            "not at all. Every reply is checked against the constraint (docs/teachers.md)")


class VllmConfig(_Strict):
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vllm backend: vLLM engine arguments (dtype, max_model_len, "
                                          "tensor_parallel_size, gpu_memory_utilization, ...); those that can change "
                                          "replies (all but the scheduling and memory ones) are in the cache key")
    concurrency: int = Field(1, ge=1, description="vllm backend: vLLM engines Ray Data runs (one per GPU, times "
                                                  "tensor_parallel_size)")
    engine_batch: int = Field(64, ge=1, description="vllm backend: rows per engine batch (ray.data.llm batch_size)")
    batch_size: int = Field(4096, ge=1, description="vllm backend: prompts per Ray Data pipeline; each pipeline "
                                                    "loads the model on every engine, and its answers are cached "
                                                    "when it ends")
    accelerator_type: str | None = Field(None, description="vllm backend: the GPU type the engines need "
                                                           "(e.g. H100), null = any")


class PriceConfig(_Strict):
    input: float = Field(..., ge=0, description="US dollars per million prompt tokens")
    output: float = Field(..., ge=0, description="US dollars per million completion tokens")


class TeacherConfig(_Strict):
    backend: Literal["llamacpp", "hf", "openai", "vllm"] = "llamacpp"
    model: str = "qwen2.5-coder-0.5b-instruct"
    gguf_file: str | None = Field(None, description="hf backend: GGUF file inside the model dir")
    labeling: Literal["generate", "score"] = Field(
        "generate",
        description="generate: free reply, parsed (may abstain); score: argmax of label log-likelihoods",
    )
    confidence: bool = Field(True, description="also score the label set to get a confidence")
    constrained: bool = Field(
        False, description="constrained decoding where the backend offers it: a classification reply is "
                           "one of the labels; NER replies follow the `type: words` line format over the known "
                           "types; trees have balanced brackets; slot replies are word/tag pairs (GBNF grammars)")
    chat: bool | None = Field(
        None, description="wrap prompts in the model's chat template; null = plain-text few-shot continuation "
                          "for local backends (llamacpp, hf) and chat for openai. Measured on 40 pool examples: "
                          "Qwen-0.5B SST-2 accuracy 0.95 plain vs 0.60 chat (all one label); TREC 0.53 vs 0.30")
    max_tokens: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0)
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = None
    repack: Literal["auto", "on", "off"] = Field(
        "auto", description="llamacpp backend: repack the weights for the CPU's matrix instructions at load "
                            "(llama.cpp's extra buffer types; off = its --no-repack). auto: each setting is first "
                            "tried in a child process, once per machine and model, and the first that runs is used "
                            "(on, except on CPUs with AMX, where repacking crashes llama-cpp-python 0.3.36)")
    seed: int = 0
    gate: Literal["warn", "stop", "off"] = Field(
        "warn", description="before the pool is labeled, score the teacher on the dev set beside the student "
                            "trained on the k gold examples, and estimate the labeling cost (costs one dev "
                            "labeling and one small student). When the teacher is near chance or below that "
                            "student (margin max(0.05, 1/n_dev)): warn = a warning, the run goes on; stop = "
                            "an error before labeling (exit code 2); off = no gate. docs/teachers.md")
    gate_max_dev: int | None = Field(
        200, ge=1, description="the gate labels at most this many dev examples: the same number of each class "
                               "(at least one), the first in the dev set's order; the supervised-k student is "
                               "scored on the same ones. null = the whole dev set. It bounds the gate's cost on "
                               "many-class tasks (BANKING77: 154 of 616 dev prompts)")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    price_per_mtok: PriceConfig | None = Field(
        None, description="the teacher's price, e.g. {input: 0.15, output: 0.6} (US dollars per million tokens): "
                          "`llmkd label --dry-run` and report.md then show dollars beside the measured tokens; "
                          "null = tokens only. Not part of what a run computes")

    @field_validator("repack", "gate", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        # YAML reads a bare `on` / `off` (in a file or in --set teacher.repack=off / teacher.gate=off) as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class StudentConfig(_Strict):
    model: str = "all-minilm-l6-v2"
    max_length: int = Field(128, ge=8)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(10, ge=0)
    epochs: int = Field(8, ge=1)
    patience: int = Field(3, ge=1, description="stop after this many epochs without dev gain (never before min_steps, nor while every dev score so far is 0)")
    min_steps: int = Field(60, ge=0, description="train at least this many optimizer steps (tiny sets); early stopping waits for them")
    max_steps: int | None = Field(
        None, ge=1, description="a training budget in steps (mini-batches of batch_size) per student, replacing epochs: "
                                "the last epoch is cut where it ends and evaluated; epochs then counts dev "
                                "evaluations, spread evenly over the budget (1: at the end only); patience may stop earlier; "
                                "min_steps is ignored. null = train by epochs. Students trained through the shared "
                                "loop (not EvoKD's rounds); LLKD counts each drawn mini-batch. docs/methods/llkd.md")
    class_balance: bool = Field(
        False, description="classification: weight each training example by n / (K x count of its class), so a "
                           "teacher that gives one class most of the pool does not make the student predict only "
                           "that class (students trained through the shared loop: supervised, vanilla, MCKD, "
                           "self_distill and EvoKD's seed student; LLKD and EvoKD's rounds keep their own weighting)")
    targets: Literal["hard", "soft", "mix"] = Field(
        "hard", description="classification students: what they learn from teacher labels. hard: the label "
                            "(cross-entropy); soft: the teacher's label distribution at student.temperature (KL, "
                            "Hinton et al. 2015), from the cache (teacher.confidence: true or teacher.labeling: "
                            "score), no extra teacher calls; mix: alpha x hard + (1 - alpha) x soft with 1 - alpha = "
                            "student.soft_weight. Gold examples always train on their label. Not for ner / "
                            "seq2seq (no per-token teacher distribution). docs/students.md")
    temperature: float = Field(1.0, gt=0, description="targets soft / mix: T of the KL term: the teacher's "
                                                      "distribution p^(1/T) renormalised, the student's "
                                                      "softmax(z/T), the KL scaled by T^2; >1 flattens both "
                                                      "(unused with targets: hard)")
    soft_weight: float = Field(0.5, ge=0, le=1, description="targets mix: weight of the soft (KL) term; the hard "
                                                            "cross-entropy gets 1 - soft_weight (hard: 1, soft: 0 "
                                                            "whatever this says)")
    device: str = "auto"
    threads: int | None = None
    parser: Literal["span", "seq2seq"] = Field(
        "span", description="task.target: tree: the student. span: a span-based chart parser on the encoder (a "
                            "valid tree over the input words by construction, one encoder pass per sentence; "
                            "trains on a CPU); seq2seq: a bert2bert / seq2seq model that generates the linearized "
                            "tree (a GPU). docs/students.md")
    tree_loss: Literal["full", "partial"] = Field(
        "partial", description="student.parser: span: which spans a target tree trains. full: every span of two or "
                            "more words (in the tree: constituent; else: not); partial: the tree's spans and the "
                            "spans that cross one of them, the rest untrained (partial bracketing: for teacher "
                            "trees that leave brackets out). docs/students.md")
    slots: Literal["tagger", "seq2seq"] = Field(
        "tagger", description="task.target: slots: the student. tagger: the token tagger reads each target as one "
                              "BIO tag per input word (one encoder pass per sentence, trains on a CPU, never "
                              "abstains; no intents: data.with_intent needs seq2seq); seq2seq: a bert2bert model "
                              "that generates the word/tag sequence (a GPU). docs/students.md")
    num_beams: int = Field(1, ge=1, description="seq2seq students: beam size at prediction (1 = greedy)")
    max_target_length: int = Field(160, ge=8, description="seq2seq students: longest generated output in tokens")


def _method_checks(info: ValidationInfo) -> dict[str, Any]:
    """The checks of method names and options. The config knows no method: they come from the
    validation context when the caller gives one, else from the build step
    (:func:`llmkd.build.validation_context`), imported here, not at module level (build imports config)."""
    if info.context is not None:
        return info.context
    from .build import validation_context

    return validation_context()


def _plain_name(name: str) -> str:
    """``name`` becomes ``output_dir/name``: one plain folder name, so the run stays inside
    ``output_dir`` (no path separators, no ``.`` / ``..``, nothing absolute, no control characters)."""
    bad = (not name.strip() or name in (".", "..") or any(c in name for c in "/\\:")
           or any(ord(c) < 32 for c in name))
    if bad:
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-") or "run"
        raise ValueError(f"must be a plain folder name (no '/', '\\', ':', '.' or '..'): the run directory is "
                         f"output_dir/name and must stay inside output_dir. Use e.g. {safe!r}, and output_dir "
                         "to choose where runs go")
    return name


def _known_method(name: str, info: ValidationInfo) -> str:
    check = _method_checks(info).get("method_name")
    return check(name) if check is not None else name


class RunConfig(_Strict):
    name: Annotated[str, AfterValidator(_plain_name)] = Field(
        "run", description="run directory name under output_dir (a plain folder name)")
    seed: int = Field(0, description="seed of the splits, demonstrations and students")
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    methods: list[Annotated[str, AfterValidator(_known_method)]] = Field(
        default_factory=lambda: ["teacher", "supervised", "vanilla", "supervised_full"],
        description="methods to run, in order (see llmkd.methods.METHODS)",
    )
    method_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method options, e.g. {mckd: {stages: 3}}")
    output_dir: str = Field("runs", description="where run directories go")
    cache: str | None = Field(None, description="teacher cache path; default ~/.cache/llmkd/teacher.sqlite")
    progress: bool = Field(True, description="progress bars on labeling and training")

    @model_validator(mode="after")
    def _method_options(self, info: ValidationInfo) -> RunConfig:
        check = _method_checks(info).get("method_options")
        if check is not None:
            check(self.method_options)  # raises ConfigError naming method_options.<name>.<field>
        return self

    @model_validator(mode="after")
    def _soft_targets(self) -> RunConfig:
        targets = self.student.targets
        if targets == "hard":
            return self
        if self.task.kind != "classification":
            raise ValueError(f"student.targets: {targets} needs the teacher's distribution over classes for each "
                             f"training example; a {self.task.kind} student learns per token and the teacher gives "
                             "no per-token distribution (at most span-level probabilities). Use student.targets: hard")
        if not self.teacher.confidence and self.teacher.labeling != "score":
            raise ValueError(f"student.targets: {targets} trains on the teacher's label distribution, which "
                             "teacher.confidence: false does not compute. Set teacher.confidence: true (scores the "
                             "label set, cached) or teacher.labeling: score, or use student.targets: hard")
        return self

    @model_validator(mode="after")
    def _ner_teacher(self) -> RunConfig:
        if self.task.kind != "ner":
            return self
        if self.teacher.labeling == "score":
            raise ValueError("teacher.labeling: 'score' ranks a fixed label set, which NER replies do not have; "
                             "use teacher.labeling: generate")
        if "max_tokens" not in self.teacher.model_fields_set:  # one line per entity needs room
            object.__setattr__(self, "teacher", self.teacher.model_copy(update={"max_tokens": 64}))
        return self


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> list[str] | None:
    """The field names of the config section at ``loc`` (e.g. ``("teacher",)``) of ``root``
    (default RunConfig), if it is one."""
    model: type[BaseModel] = root or RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return list(model.model_fields)


def _format_errors(exc: ValidationError, source: str, *, root: type[BaseModel] | None = None,
                   prefix: str = "") -> str:
    """One line per error: the field path (under ``prefix``, e.g. ``method_options.mckd``), what is
    wrong, the allowed values or known fields, and what was given. ``root`` is the model validated."""
    lines = [f"invalid config{f' {source}' if source else ''}:"]
    for err in exc.errors():
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg = f"allowed values are {ctx['expected']}"
        if err["type"] == "value_error" and "error" in ctx:
            msg = str(ctx["error"])  # our own validator's message, without pydantic's "Value error, "
        if err["type"] == "extra_forbidden":
            known = _fields_at(err["loc"][:-1], root)
            msg = "unknown field (check the spelling" + (f"; the fields here are {known})" if known else ")")
        if err["type"] == "missing":
            msg = "field required"
        given = err.get("input")
        given_s = "" if err["type"] == "missing" or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {path}: {msg}{given_s}")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    """A YAML scalar or flow collection (``3``, ``null``, ``[a, b]``, ``{a: b}``); anything else,
    e.g. prose with a colon (``Is it: good?``), stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (dict, list)) and not text.strip().startswith(("{", "[")):
        return text  # a block mapping or list on one line is prose, not structure
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a raw config dict."""
    out = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set student.epochs=3")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty field name in {key.strip()!r}; expected e.g. --set student.epochs=3")
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = _parse_value(value)
    return out


def parse_config(raw: dict[str, Any], source: str = "", base_dir: Path | None = None) -> RunConfig:
    """Validate a raw dict; relative data paths are resolved against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config{f' {source}' if source else ''}: the top level must be a mapping of fields "
            f"(data:, teacher:, ...), got a {type(raw).__name__}"
        )
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    if base_dir is not None:
        def fix(p: str | None) -> str | None:
            if p is None or Path(p).is_absolute():
                return p
            return str((base_dir / p).resolve())

        data = cfg.data.model_copy(update={"train": fix(cfg.data.train), "test": fix(cfg.data.test), "dev": fix(cfg.data.dev),
                                         "human_labels": fix(cfg.data.human_labels)})
        cfg = cfg.model_copy(update={"data": data})
    return cfg


def run_config_path(run_dir: str | Path) -> Path:
    """``RUN_DIR/config.yaml``, the config ``llmkd run`` / ``llmkd label`` wrote into a run folder;
    a :class:`ConfigError` when ``run_dir`` has none."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); give the folder `llmkd label` or "
                          "`llmkd run` printed")
    return path


def run_config(run_dir: str | Path) -> RunConfig:
    """The config a run folder was made with (:func:`run_config_path`), validated."""
    path = run_config_path(run_dir)
    return parse_config(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config file, apply overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}. Check indentation and quoting there.") from None
    if raw is None:
        raw = {}
    if isinstance(raw, dict):  # else parse_config reports the top level
        raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, source=str(path), base_dir=path.parent)


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML (what RUN_DIR/config.yaml holds). Credentials in teacher.openai.base_url
    are masked (``https://user:***@host``): a run folder is shared, a password is not."""
    from .teachers.base import redact_url

    data = cfg.model_dump(mode="json")
    urls = data["teacher"]["openai"]["base_url"]
    data["teacher"]["openai"]["base_url"] = redact_url(urls) if isinstance(urls, str) else [redact_url(u) for u in urls]
    return yaml.safe_dump(data, sort_keys=False)
