"""The by-hand composition shown in docs/api.md, on a tiny slice with the real SmolLM2 + MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmkd
from llmkd.api import choose_shots
from llmkd.methods import RunContext
from llmkd.teachers import CachedTeacher, TeacherCache

pytestmark = pytest.mark.slow


def test_by_hand_matches_the_docs(tiny_config, tmp_path: Path) -> None:
    cfg = llmkd.load_config(tiny_config())
    splits, vault = llmkd.make_splits(cfg.data, seed=0)
    task = llmkd.build_task(cfg.task, splits.labels)
    teacher = CachedTeacher(llmkd.build_teacher(cfg.teacher), TeacherCache(tmp_path / "teacher.sqlite"))
    new_student, load_student = llmkd.make_student_factory(cfg.student, splits.labels)
    from llmkd.methods import LabelSettings, TrainSettings

    ctx = RunContext(task=task, teacher=teacher, student_factory=new_student, student_loader=load_student,
                     labeled=splits.labeled, pool=splits.pool, dev=splits.dev, test=splits.test,
                     shots=splits.labeled, workdir=tmp_path / "by-hand", progress=False,
                     train=TrainSettings(epochs=1, min_steps=2, batch_size=8),
                     labeling=LabelSettings(mode="score"))
    result = llmkd.METHODS["vanilla"].build().run(ctx)
    assert set(result.metrics) >= {"accuracy", "macro_f1"}
    assert len(result.predictions) == len(splits.test)
    assert len(result.labels) == len(splits.pool)
    assert all(lab.source == "teacher" for lab in result.labels)
    assert teacher.misses > 0


def test_dry_run_counts_the_shared_prefix_once(tiny_config) -> None:
    cfg = llmkd.load_config(tiny_config())
    est = llmkd.dry_run(cfg, calibrate=False)
    splits, _ = llmkd.make_splits(cfg.data, seed=0)
    assert est["prompts"] == len(splits.pool) + len(splits.test)  # "teacher" is among the methods
    task = llmkd.build_task(cfg.task, splits.labels)
    prompt = task.render(splits.pool[0].text, choose_shots(splits.labeled, cfg))
    shared = llmkd.build_teacher(cfg.teacher).count_tokens(prompt[:prompt.shared])
    assert shared > 0
    # the shared part is counted once, every other token once per prompt
    saved = est["prompt_tokens"] - est["prompt_tokens_after_prefix_reuse"]
    assert abs(saved - shared * (est["prompts"] - 1)) <= 2  # int() rounding of the two totals
