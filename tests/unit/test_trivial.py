"""The ``trivial`` method: a prediction without a model (tasks.base.HasTrivialBaseline)."""

from __future__ import annotations

import pytest

from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example


def test_classification_trivial_is_the_labeled_majority_with_ties_in_label_order() -> None:
    task = ClassificationTask(labels=["neg", "neu", "pos"])
    labeled = [Example("a", "x", "pos"), Example("b", "y", "neu"), Example("c", "z", "pos")]
    assert task.trivial("anything", labeled) == "pos"
    assert task.trivial("anything", labeled[:2]) == "neu"  # neu and pos tie: neu comes first
    with pytest.raises(ValueError, match="at least one labeled example"):
        task.trivial("anything", [])
