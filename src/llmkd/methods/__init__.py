"""Methods: one algorithm per file, composed from protocols only."""

from __future__ import annotations

from .base import LabelSettings, Method, RunContext, TrainSettings, fit_student
from .baselines import Supervised, TeacherFewShot
from .vanilla import VanillaKD

METHODS = {
    "teacher": lambda: TeacherFewShot(),
    "supervised": lambda: Supervised(name="supervised"),
    "vanilla": lambda: VanillaKD(),
    "supervised_full": lambda: Supervised(name="supervised_full"),
}

__all__ = ["METHODS", "Method", "RunContext", "TrainSettings", "LabelSettings", "fit_student",
           "TeacherFewShot", "Supervised", "VanillaKD"]
