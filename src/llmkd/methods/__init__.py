"""Methods: one algorithm per file, composed from protocols only.

Every method is registered here by name with :func:`register`: a factory that takes the method's
options as keyword arguments, an optional pydantic model validating those options (given in a
run config under ``method_options.<name>``), and whether the method needs the teacher. The build
step (:mod:`llmkd.build`) validates the options and builds the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from .base import LabelSettings, Method, RunContext, TrainSettings, fit_student, require_answers
from .baselines import Supervised, TeacherFewShot, Trivial
from .llkd import LLKD, LLKDOptions
from .mckd import MCKD, MCKDOptions
from .self_distill import SelfDistill, SelfDistillOptions
from .vanilla import VanillaKD, VanillaKDOptions
from .evokd import EvoKD, EvoKDOptions, synth_nofeedback


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., Method]
    options: type[BaseModel] | None = None
    uses_teacher: bool = False
    summary: str = ""

    def build(self, options: dict[str, Any] | None = None) -> Method:
        """Validate ``options`` (ConfigError naming ``method_options.<name>.<field>``) and build:
        :func:`llmkd.build.build_method`, the one place method options are validated."""
        from ..build import build_method

        return build_method(self, options)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


register(MethodSpec("teacher", TeacherFewShot, uses_teacher=True, summary="few-shot teacher on the test set"))
register(MethodSpec("supervised", lambda: Supervised(name="supervised"), summary="student on the k gold examples"))
register(MethodSpec("trivial", Trivial, summary="no model: the most frequent gold class, right-branching trees (parsing), all-O tags (slots)"))
register(MethodSpec("vanilla", VanillaKD, options=VanillaKDOptions, uses_teacher=True, summary="teacher labels the pool; one student"))
register(MethodSpec("llkd", LLKD, options=LLKDOptions, uses_teacher=True,
                    summary="LLKD: keep confident teacher labels the student still needs, per-class adaptive thresholds"))
register(MethodSpec("supervised_full", lambda: Supervised(name="supervised_full"),
                    summary="student on the full gold train set (upper bound)"))
register(MethodSpec("mckd", MCKD, options=MCKDOptions, uses_teacher=True,
                    summary="multistage collaborative KD: students cross-relabel pool parts, then a final student"))
register(MethodSpec("self_distill", SelfDistill, options=SelfDistillOptions, uses_teacher=True,
                    summary="KD + self-distillation with filter: KD student relabels the pool, top half kept"))
register(MethodSpec("evokd", EvoKD, options=EvoKDOptions, uses_teacher=True,
                    summary="EvoKD: LLM analyses the student's errors, writes hard + easy inputs, labels them apart"))
register(MethodSpec("synth_nofeedback", synth_nofeedback, options=EvoKDOptions, uses_teacher=True,
                    summary="LLM writes new inputs without student feedback (ZeroGen/AugGPT-style), same loop as evokd"))

__all__ = ["METHODS", "MethodSpec", "register", "Method", "RunContext", "TrainSettings", "LabelSettings",
           "fit_student", "require_answers", "TeacherFewShot", "Supervised", "VanillaKD", "MCKD", "SelfDistill"]
