"""Warnings for suspicious results: a collapsed student, a skewed teacher."""

from __future__ import annotations

import json
from pathlib import Path

from llmkd.diagnostics import label_skew, prediction_collapse, run_warnings


def test_a_student_predicting_one_class_is_flagged() -> None:
    gold = ["pos", "neg"] * 50
    msg = prediction_collapse("vanilla", ["pos"] * 97 + ["neg"] * 3, gold)
    assert msg and "vanilla: the student predicts 'pos' for 97%" in msg and "class_balance" in msg
    assert prediction_collapse("vanilla", ["pos"] * 90 + ["neg"] * 10, gold) is None
    assert prediction_collapse("vanilla", ["pos"] * 100, ["pos"] * 100) is None  # a one-class test set
    assert "the teacher predicts" in prediction_collapse("teacher", [None] * 2 + ["neg"] * 98, gold)
    assert prediction_collapse("ner", [(("PER", 0, 1),)] * 10, [(("PER", 0, 1),)] * 10) is None  # not classes


def test_a_skewed_teacher_is_flagged_with_both_mixes() -> None:
    gold = ["positive", "negative"] * 8
    msg = label_skew(["positive"] * 349 + ["negative"] * 67, gold)
    assert msg and "total variation 0.34" in msg and "pool positive 84%, negative 16%" in msg
    assert "gold negative 50%, positive 50%" in msg or "gold positive 50%, negative 50%" in msg
    assert label_skew(["positive"] * 230 + ["negative"] * 186, gold) is None


def test_run_warnings_reads_the_saved_predictions(tmp_path: Path) -> None:
    for m, preds in (("teacher", ["a", "b"] * 10), ("vanilla", ["a"] * 20)):
        (tmp_path / m).mkdir()
        (tmp_path / m / "predictions.jsonl").write_text(
            "".join(json.dumps({"id": str(i), "gold": "ab"[i % 2], "pred": p}) + "\n" for i, p in enumerate(preds)))
    found = run_warnings(tmp_path, ["teacher", "vanilla", "supervised"], ["a"] * 9 + ["b"], ["a", "b"])
    assert len(found) == 2 and found[0].startswith("the teacher's labels") and found[1].startswith("vanilla:")
