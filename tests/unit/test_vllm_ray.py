"""The vllm teacher backend (vLLM engines through ray.data.llm) on a local Ray cluster (127.0.0.1,
2 CPUs, started and stopped here), with a stand-in for the vLLM stage (tests/fake_vllm_stage.py):
Ray's own Processor, preprocess and postprocess, the same input and output columns. Labels equal
those of the same toy model labeling locally; the driver alone writes the cache."""

from __future__ import annotations

import pytest

from llmkd.labeling import label_examples
from llmkd.tasks import ClassificationTask
from llmkd.teachers import CachedTeacher, TeacherCache
from llmkd.teachers.base import Constraint
from llmkd.types import Example
from tests.fake_vllm_stage import FakeBuilder, ToyTeacher
from tests.fakes import classify_text

LABELS = ("negative", "positive")
ITEMS = [Example(f"u{i}", f"review number {i} {'great' if i % 3 else 'awful'} film", None) for i in range(24)]
SHOTS = (Example("s0", "a great film", "positive"), Example("s1", "an awful film", "negative"))


def reply_of(prompt: str) -> str:
    """The toy model's reply to a rendered classify prompt (run on the Ray workers)."""
    text = classify_text(prompt)
    return "positive" if "great" in text else ("negative" if int(text.split()[2]) % 2 else "not a label")


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data.llm")  # needs aiohttp (llmkd[ray])
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _vllm(chat: bool = False, **kw):
    from llmkd.teachers.vllm_ray import VllmRayTeacher

    builder = FakeBuilder(reply_of)
    return VllmRayTeacher(model="org/toy-model", weights="hub:org/toy-model", chat=chat, concurrency=2,
                          engine_batch=8, processor_builder=builder, **kw), builder


@pytest.mark.parametrize("chat", [False, True])
def test_vllm_labels_equal_local_labels_and_the_driver_fills_the_cache(cluster, tmp_path, chat) -> None:
    from llmkd.ray_labeling import label_on_ray

    task = ClassificationTask(labels=LABELS)
    local = label_examples(task, CachedTeacher(ToyTeacher(reply_of, chat=chat), TeacherCache(tmp_path / "l.sqlite")),
                           ITEMS, SHOTS, progress=False)
    teacher, builder = _vllm(chat)
    cache = TeacherCache(tmp_path / "vllm.sqlite")
    driver = CachedTeacher(teacher, cache)
    labels = label_on_ray(task, driver, lambda: pytest.fail("a vllm teacher is not built on workers"), ITEMS, SHOTS,
                          progress=False)
    assert labels == local  # same replies, same confidences (option scores from prompt logprobs)
    assert any(lab.abstained for lab in labels) and all(lab.confidence for lab in labels if not lab.abstained)
    assert teacher.pipelines == 1  # one chunk, its option scores in the generate pipeline: one model load
    assert [c["chat_template_stage"] for c in builder.configs] == [chat]
    assert builder.configs[0]["tokenize_stage"] is False and builder.configs[0]["concurrency"] == 2
    stats = cache.stats()
    assert stats["entries"] == 2 * len(ITEMS) and stats["repeated_calls"] == 0
    assert {r[0] for r in cache._db.execute("SELECT DISTINCT fingerprint FROM entries")} == {teacher.fingerprint}
    # labeled without the Ray executor: a generate and a score pipeline, the same labels
    alone, _ = _vllm(chat)
    assert label_examples(task, CachedTeacher(alone, TeacherCache(tmp_path / "alone.sqlite")), ITEMS, SHOTS,
                          progress=False) == local
    assert alone.pipelines == 2
    # a later run finds every answer cached and never asks the engines
    later = CachedTeacher(_vllm(chat)[0], cache, cache_only=True)
    assert label_examples(task, later, ITEMS, SHOTS, progress=False) == local


def test_generate_reads_token_logprobs_and_applies_a_choice_constraint(cluster, tmp_path) -> None:
    teacher, _ = _vllm()
    toy = ToyTeacher(reply_of)
    task = ClassificationTask(labels=LABELS)
    prompts = [task.render(x.text, SHOTS) for x in ITEMS[:6]]
    got = teacher.generate(prompts, max_tokens=9, stop=["\n"])
    assert got == toy.generate(prompts, max_tokens=9, stop=["\n"])
    assert got[0].token_logprobs and len(got[0].token_logprobs) == got[0].completion_tokens
    assert {r.finish_reason for r in got} == {"stop", "length"}  # "not a label" is cut at 9 tokens
    # constrained: the choice goes as structured_outputs, every reply keeps it
    cached = CachedTeacher(teacher, TeacherCache(tmp_path / "c.sqlite"))
    replies = cached.generate(prompts, max_tokens=8, constraint=Constraint.choice(LABELS))
    assert {r.text for r in replies} <= set(LABELS) and all(r.constrained for r in replies)
    assert cached.constrained_replies == 6 and cached.violations == 0


def test_a_reply_that_breaks_its_constraint_counts_unconstrained(cluster, tmp_path) -> None:
    # the stand-in applies choices only: a grammar reaches it (vLLM would apply it) but is not kept
    teacher, _ = _vllm()
    cached = CachedTeacher(teacher, TeacherCache(tmp_path / "g.sqlite"))
    task = ClassificationTask(labels=LABELS)
    prompts = [task.render(x.text, SHOTS) for x in ITEMS[:3]]
    replies = cached.generate(prompts, max_tokens=8, constraint=Constraint.gbnf('root ::= "yes" | "no"'))
    assert [r.constrained for r in replies] == [False] * 3 and cached.violations == 3


def test_structured_outputs_mapping_and_fingerprint() -> None:
    import json

    from llmkd.teachers.vllm_ray import VllmRayTeacher, structured_outputs

    assert structured_outputs(Constraint.choice(["a", "b"])) == {"choice": ["a", "b"]}
    assert structured_outputs(Constraint.gbnf('root ::= "x"')) == {"grammar": 'root ::= "x"'}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert json.loads(structured_outputs(Constraint.json_schema(schema))["json"]) == schema

    def fp(**kw):
        return VllmRayTeacher(model="org/m", weights="hub:org/m", **kw).fingerprint

    base = fp()
    assert fp(engine_kwargs={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}, concurrency=4) == base
    assert fp(engine_kwargs={"dtype": "float16"}) != base and fp(chat=True) != base
    assert VllmRayTeacher(model="org/m", weights="hub:org/other").fingerprint != base


def test_without_ray_data_llm_the_error_names_the_extra(monkeypatch) -> None:
    import sys

    from llmkd.errors import MissingExtraError
    from llmkd.teachers.vllm_ray import build_processor

    monkeypatch.setitem(sys.modules, "ray.data.llm", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'llmkd\[vllm\]'"):
        build_processor({}, preprocess=dict, postprocess=dict)


def test_the_config_builds_a_vllm_teacher() -> None:
    from llmkd.build import build_teacher
    from llmkd.config import TeacherConfig
    from llmkd.teachers.vllm_ray import VllmRayTeacher

    cfg = TeacherConfig(backend="vllm", model="Qwen/Qwen2.5-0.5B-Instruct",
                        vllm={"engine_kwargs": {"max_model_len": 2048}, "concurrency": 2})
    teacher = build_teacher(cfg)
    assert isinstance(teacher, VllmRayTeacher) and teacher.chat is False
    assert teacher.processor_config(False)["engine_kwargs"] == {"max_model_len": 2048}
    assert teacher.concurrency == 2 and teacher.weights == "hub:Qwen/Qwen2.5-0.5B-Instruct"


def test_llmkd_label_with_the_vllm_backend_on_ray(cluster, tmp_path, monkeypatch) -> None:
    """``llmkd label CONFIG --executor ray`` with ``teacher.backend: vllm`` (api.label, in process):
    the config builds the teacher, the pool goes through the engines once, the driver's cache
    answers a second labeling without a pipeline."""
    import json

    from llmkd import api
    from llmkd.config import parse_config
    from llmkd.teachers import vllm_ray

    builder = FakeBuilder(reply_of)
    monkeypatch.setattr(vllm_ray, "build_processor", builder)  # the one seam to ray.data.llm
    rows = [{"text": f"review number {i} {'great' if i % 3 else 'awful'} film", "label": LABELS[i % 3 > 0]}
            for i in range(40)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({
        "name": "v", "seed": 0,
        "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 20, "test_size": 8}},
        "teacher": {"backend": "vllm", "model": "org/toy-model", "gate": "off",
                    "vllm": {"concurrency": 1, "engine_kwargs": {"max_model_len": 2048}}},
        "methods": ["vanilla"], "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "c.sqlite"),
        "progress": False})
    run_dir, labels = api.label(cfg, executor="ray")
    assert len(labels) == 20 and len(builder.configs) == 1  # generate and option scores in one pipeline
    assert builder.configs[0]["engine_kwargs"]["max_model_len"] == 2048  # (Ray adds its task_type to the copy)
    assert all(lab.confidence is not None for lab in labels if not lab.abstained)
    again = api.label(cfg.model_copy(update={"name": "v2"}), executor="ray")[1]
    assert len(builder.configs) == 1 and again == labels  # every answer from the cache
