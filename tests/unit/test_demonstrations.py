"""``task.demonstrations`` (issue 27 item 3): ``fixed`` renders every prompt as before (one seeded
set of shots, so the shared teacher cache keeps answering); ``per_query`` gives each item its own
seeded draw of ``task.shots`` demonstrations, the same draw on a rerun (cache hits, no teacher
call), for every task kind, through a whole run (gate, labeling, report, dry run) with a scripted
teacher; a bad value is a ConfigError naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmkd import api, build
from llmkd.errors import ConfigError
from llmkd.labeling import Demonstrations, label_examples
from llmkd.tasks import ClassificationTask, NerTask, Seq2SeqTask
from llmkd.teachers.cache import CachedTeacher, TeacherCache
from llmkd.types import Example, Unlabeled
from tests.fakes import ScriptedTeacher
from tests.unit.test_gate import fakes, load, write_config  # noqa: F401 - fakes is a fixture

LABELED = tuple(Example(f"l{i}", f"gold review {i} was {'good' if i % 2 else 'bad'}", "positive" if i % 2 else "negative")
                for i in range(12))
ITEMS = [Unlabeled(f"u{i}", f"pool review {i}") for i in range(20)]


def shown(prompt: str) -> list[str]:
    """The demonstrations' texts in a classify.v2 prompt, in order (the last text is the item's)."""
    return re.findall(r"Text: <text>(.*?)</text>", prompt)[:-1]


def label(teacher: Any, demos: Any, items: Any = ITEMS) -> list[Any]:
    return label_examples(ClassificationTask(labels=["negative", "positive"]), teacher, items, demos,
                          confidence=False, progress=False)


def test_per_query_draws_its_own_demonstrations_for_each_item_and_a_rerun_hits_the_cache(tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path / "cache.sqlite")
    teacher = CachedTeacher(ScriptedTeacher(lambda text: "positive"), cache)
    demos = Demonstrations(LABELED, k=4, seed=3)
    first = label(teacher, demos)
    prompts = [p for call in teacher.teacher.generate_calls for p in call]
    draws = [shown(p) for p in prompts]
    order = [e.text for e in LABELED]
    for x, drew in zip(ITEMS, draws):
        assert len(drew) == 4 == len(set(drew))  # task.shots of them, no repeats
        assert drew == sorted(drew, key=order.index)  # shown in the labeled set's order
        assert tuple(e.text for e in demos.for_item(x)) == tuple(drew)
    assert len({tuple(d) for d in draws}) > 10  # 20 items, C(12, 4) = 495 possible draws
    assert {t for d in draws for t in d} == set(order)  # every gold example is shown somewhere

    # a rerun (a fresh object, as a resumed run or another method builds it) asks the teacher nothing
    again = CachedTeacher(ScriptedTeacher(lambda text: "positive"), cache)
    assert label(again, Demonstrations(LABELED, k=4, seed=3)) == first
    assert again.teacher.generate_calls == [] and again.hits == len(ITEMS)

    # another seed draws other demonstrations
    other = Demonstrations(LABELED, k=4, seed=4)
    assert sum(other.for_item(x) != demos.for_item(x) for x in ITEMS) > 10


def test_fixed_demonstrations_are_the_plain_shots_in_every_prompt() -> None:
    teacher = ScriptedTeacher(lambda text: "positive")
    shots = LABELED[:3]
    assert label(teacher, Demonstrations(shots)) == label(ScriptedTeacher(lambda text: "positive"), shots)
    prompts = [p for call in teacher.generate_calls for p in call]
    task = ClassificationTask(labels=["negative", "positive"])
    assert prompts == [task.render(x.text, shots) for x in ITEMS]  # byte for byte the prompts of a tuple of shots
    fixed = Demonstrations(shots)
    assert (fixed.mode, fixed.per_prompt) == ("fixed", 3)
    assert (Demonstrations(LABELED, k=30).mode, Demonstrations(LABELED, k=30).per_prompt) == ("per_query", 12)


def test_an_item_is_never_its_own_demonstration() -> None:
    demos = Demonstrations(LABELED, k=len(LABELED))
    for e in LABELED:
        drew = demos.for_item(e)
        assert e not in drew and len(drew) == len(LABELED) - 1


@pytest.mark.parametrize("task, gold, reply", [
    (NerTask(labels=["PER", "LOC"]), ("B-PER", "O", "O", "B-LOC"), "PER: Mary"),
    (Seq2SeqTask(target="tree"), "( ( w0 w1 ) ( w2 w3 ) )", "( a b )"),
    (Seq2SeqTask(target="slots", labels=["O", "B-city"]), "O O O B-city", "x O"),
], ids=["ner", "seq2seq-tree", "seq2seq-slots"])
def test_every_task_kind_renders_the_items_own_draw(task: Any, gold: Any, reply: str) -> None:
    labeled = tuple(Example(f"l{i}", f"Mary{i} went to Rome{i}", gold) for i in range(8))
    demos = Demonstrations(labeled, k=3, seed=0)
    teacher = ScriptedTeacher(lambda text: reply, text_of=lambda prompt: prompt)
    label_examples(task, teacher, ITEMS[:6], demos, confidence=False, progress=False)
    prompts = [p for call in teacher.generate_calls for p in call]
    for x, prompt in zip(ITEMS[:6], prompts):
        assert prompt == task.render(x.text, demos.for_item(x))
        assert {e.text for e in labeled if e.text in prompt} == {e.text for e in demos.for_item(x)}
    assert len({tuple(demos.for_item(x)) for x in ITEMS[:6]}) > 1


# ---- through a run: config, Session, gate, report, dry run ------------------------------------


def prompts_of(fakes: dict[str, Any]) -> list[str]:  # noqa: F811 - the fixture's value
    return [p for teacher in fakes["teachers"] for call in teacher.generate_calls for p in call]


def test_fixed_runs_render_the_prompts_of_before(tmp_path: Path, fakes: dict[str, Any]) -> None:  # noqa: F811
    cfg = load(write_config(tmp_path, task__shots=3, data__split__labeled_per_class=5))
    assert cfg.task.demonstrations == "fixed"
    summary = api.run(cfg)
    sess = build.Session(cfg)
    shots = build.choose_shots(sess.splits.labeled, cfg)  # one seeded draw, in every prompt
    items = {x.text: x for x in (*sess.splits.dev, *sess.splits.pool)}
    prompts = prompts_of(fakes)
    assert len(prompts) == len(items)
    assert all(p == sess.task.render(fakes["teachers"][0].text_of(p), shots) for p in prompts)
    assert json.loads((summary.run_dir / "metrics.json").read_text())["gate"]["demonstrations"] == "fixed"
    assert "| teacher (few-shot; abstention rate" in summary.report
    assert build.Session(cfg).teacher_shots == shots


def test_per_query_through_a_run_the_gate_and_a_rerun(tmp_path: Path, fakes: dict[str, Any]) -> None:  # noqa: F811
    path = write_config(tmp_path, task__shots=3, task__demonstrations="per_query", data__split__labeled_per_class=5)
    cfg = load(path)
    summary = api.run(cfg)
    sess = build.Session(cfg)
    labeled = {e.text for e in sess.splits.labeled}
    prompts = prompts_of(fakes)
    assert len(prompts) == len(sess.splits.dev) + len(sess.splits.pool)  # the gate's dev set, then the pool
    draws = [shown(p) for p in prompts]
    assert all(len(d) == 3 and set(d) <= labeled for d in draws)
    assert len({tuple(d) for d in draws}) > len(draws) // 2
    gate = json.loads((summary.run_dir / "metrics.json").read_text())["gate"]
    assert (gate["demonstrations"], gate["shots_per_prompt"]) == ("per_query", 3)
    assert "| teacher (few-shot, 3 demonstrations drawn per query; abstention rate" in summary.report
    assert "demonstrations: per_query" in (summary.run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="task.demonstrations: per_query draws each item's demonstrations"):
        sess.teacher_shots

    # another run of the same config (its own folder, the same cache) asks the teacher nothing
    n = len(prompts)
    api.run(load(path, "name=again"))
    assert len(prompts_of(fakes)) == n

    # the dry run renders the same prompts, and says how they are drawn
    dry = api.dry_run(cfg, calibrate=False)
    assert (dry["demonstrations"], dry["shots"], dry["prompts"]) == ("per_query", 3, len(sess.splits.pool))
    assert dry["prompt_tokens_after_prefix_reuse"] < dry["prompt_tokens"]


@pytest.mark.parametrize("value", ["random", "per-query", 30])
def test_a_bad_value_is_a_config_error_naming_the_field(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write_config(tmp_path, task__demonstrations=value))
    assert f"task.demonstrations: allowed values are 'fixed' or 'per_query' (got {value!r})" in str(exc.value)
