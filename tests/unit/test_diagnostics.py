"""Warnings for suspicious results: a collapsed student, a skewed teacher."""

from __future__ import annotations

import json
from pathlib import Path

from llmkd.diagnostics import label_skew, prediction_collapse, run_warnings, still_rising, training_warnings


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


def test_a_many_class_mix_names_the_largest_classes_and_counts_the_rest() -> None:
    gold = [f"c{i}" for i in range(20)] * 2
    msg = label_skew(["c0"] * 50 + [f"c{i}" for i in range(1, 20)] * 2, gold)
    assert msg and "pool c0 57%, " in msg and "and 14 more classes (" in msg and "gold c0 5%" in msg
    assert msg.count("%") == 2 * 7  # per mix: 6 classes named, the rest in one share


def record(scores: list[float], reason: str = "max_epochs", **over) -> dict:
    hist = [{"epoch": i + 1, "score": s} for i, s in enumerate(scores)]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return {"done": True, "stop_reason": reason, "kept": "best", "history": hist, "best_epoch": best + 1,
            "dev_metric": "macro_f1", **over}


def test_a_student_still_rising_when_its_epochs_ran_out_is_flagged(tmp_path: Path) -> None:
    # BANKING77's vanilla student (77 classes, 6 epochs), measured: dev macro-F1 still climbing
    msg = still_rising("vanilla", [record([0.053, 0.084, 0.151, 0.191, 0.239, 0.279])], 6)
    assert msg == ("vanilla: its student ran out of epochs with the dev macro_f1 still rising (0.191, 0.239, 0.279 "
                   "at the last three evaluations, the last one the best, after 6 epochs): it is likely undertrained. "
                   "Raise student.epochs (now 6; early stopping still ends training once dev stops improving) or "
                   "student.lr.")
    assert still_rising("vanilla", [record([0.5, 0.7, 0.7, 0.8])], 4) is None  # a flat step before the last
    assert still_rising("vanilla", [record([0.5, 0.8, 0.7])], 3) is None  # the best is not the last
    assert still_rising("vanilla", [record([0.5, 0.6, 0.7], reason="no dev gain in 3 evaluations")], 3) is None
    assert still_rising("llkd", [record([0.5, 0.6, 0.7], reason="step budget (90 steps) spent")], 3) is None
    assert still_rising("mckd", [record([0.5, 0.6, 0.7], kept="latest")], 3) is None  # MCKD keeps the latest
    msg = still_rising("mckd", [record([0.5, 0.6, 0.7]), record([0.7, 0.6, 0.5])], 3)
    assert msg and msg.startswith("mckd: 1 of its 2 students ran out of epochs")

    for m, scores in (("vanilla", [0.1, 0.2, 0.3]), ("supervised", [0.3, 0.2, 0.1])):
        d = tmp_path / m / "student"
        d.mkdir(parents=True)
        (d / "progress.json").write_text(json.dumps(record(scores)))
    (tmp_path / "vanilla" / "other").mkdir()
    (tmp_path / "vanilla" / "other" / "progress.json").write_text(json.dumps({**record([0.1, 0.2, 0.3]), "done": False}))
    found = training_warnings(tmp_path, ["supervised", "vanilla", "teacher"], 3)
    assert len(found) == 1 and found[0].startswith("vanilla: its student ran out of epochs")  # unfinished ones skipped
