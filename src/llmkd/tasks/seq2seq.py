"""Sequence generation tasks: constituency parsing and slot filling (MCKD's benchmarks).

A :class:`Seq2SeqTask` renders MCKD's few-shot prompt (v1 Table 2: ``Input:`` / ``Output:``
blocks, then the query; the templates ``parse.v1`` / ``slots.v1`` add a one-line instruction),
repairs each generated output against the input words (:func:`llmkd.formats.trees.repair`,
:func:`llmkd.formats.slots.repair_slots`) and scores with bracket F1 or slot F1.

Labels are target strings: a linearized tree (``( ( The ( big cat ) ) ( sat ) )``; with
``data.tree_labels`` ``(S (NP The ( big cat ) ) (VP sat ) )``) or a word/tag sequence
(``show O flights O from O boston B-fromloc.city_name``, optionally ``<intent> | `` first).

Repair runs on every teacher reply (:meth:`parse_detailed`, which also returns the counts of the
repair actions that fired, kept on the label as ``meta``) and every student output (the seq2seq
student calls :meth:`parse_detailed` through its ``postprocess`` hook). What repair cannot fix is a
:class:`~llmkd.errors.ParseError`: an abstention, counted in ``abstention_rate``, never a silent 0.

Teacher confidence (:meth:`label_logprob`) is the *mean* token log-probability of the reply, so
``exp`` of it is the geometric-mean token probability: a sum would make every long tree look
unlikely. With ``teacher.constrained: true`` the teacher's reply follows a GBNF grammar
(:meth:`Seq2SeqTask.constraint`: balanced brackets, or word/tag pairs over the known tags).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from ..errors import ConfigError, ParseError
from ..types import Example, Reply
from .base import load_template, render_prompt

DEFAULT_INSTRUCTIONS = {
    "tree": ("Parse the sentence into its constituency tree without labels. Put every constituent in "
             "round brackets ( ), keep every word of the sentence exactly once and in order, add no other words."),
    "slots": ("Tag every word of the sentence with its slot tag in BIO format (O when the word is not part "
              "of a slot). Write each word followed by its tag, in the order of the sentence."),
}
DEFAULT_TEMPLATES = {"tree": "parse.v1", "slots": "slots.v1"}


class Seq2SeqTask:
    kind = "seq2seq"
    stop = ("\n",)

    def __init__(self, *, target: Literal["tree", "slots"], labels: Sequence[str] = (),
                 instruction: str | None = None, template: str | None = None, max_edit: float = 0.5) -> None:
        if target not in ("tree", "slots"):
            raise ConfigError(f"task.target: allowed values are 'tree' and 'slots' (got {target!r})")
        self.target = target
        self.labels = tuple(labels)
        self.instruction = instruction or DEFAULT_INSTRUCTIONS[target]
        self.template = template or DEFAULT_TEMPLATES[target]
        self.max_edit = max_edit
        load_template(self.template)  # fails early, naming the available templates
        from ..formats.slots import TAG

        self.tags = tuple(x for x in self.labels if target == "slots" and TAG.match(x))
        self.intents = tuple(x for x in self.labels if target == "slots" and not TAG.match(x))

    @property
    def template_id(self) -> str:
        return self.template

    @property
    def primary_metric(self) -> str:
        """Per-sentence bracket F1 for trees, slot F1 for slots (the first key of :meth:`score`)."""
        return "sentence_f1" if self.target == "tree" else "slot_f1"

    @property
    def labeled_trees(self) -> bool:
        return self.target == "tree" and bool(self.labels)

    # -- the trivial baseline (tasks.base.HasTrivialBaseline) -----------------------------------
    @property
    def trivial_name(self) -> str:
        return "right-branching trees" if self.target == "tree" else "every word tagged O"

    def trivial(self, text: str, labeled: Sequence[Example] = ()) -> str:
        """The right-branching tree over ``text``'s words; for slots, every word tagged ``O``
        (and the first intent, when the targets carry one). ``labeled`` is not used."""
        words = text.split()
        if self.target == "tree":
            from ..formats.trees import right_branching

            return right_branching(words)
        from ..formats.slots import to_target

        return to_target(words, ["O"] * len(words), self.intents[0] if self.intents else None)

    def vocabulary(self) -> list[str]:
        """Strings a student tokenizer should keep whole (labeled brackets ``(NP``, slot tags,
        intents): the seq2seq student adds them as tokens, so ``B-fromloc.city_name`` is one."""
        if self.target == "tree":
            return ["(" + lab for lab in self.labels]
        return list(self.labels)

    def render(self, text: str, shots: Sequence[Example]) -> str:
        return render_prompt(
            self.template, instruction=self.instruction, shots=[{"text": s.text, "label": s.label} for s in shots],
            text=text,
        )

    def constraint(self) -> Any:
        """The GBNF grammar for ``teacher.constrained``, one line (the task stops at ``\\n``).

        * trees: balanced round brackets, each opened bracket holding at least one word or
          bracket; with bracket labels, ``(`` may be followed directly by one of them (``(NP``).
        * slots: ``word tag`` pairs, each tag one of the data's slot tags (any ``B-``/``I-`` tag
          when none are known), after ``<intent> | `` when the data has intents.

        One grammar serves every sentence, so words are not pinned to the input's: the repair
        step still aligns them (a constraint only removes replies that cannot be read at all).
        """
        from ..teachers.base import Constraint, gbnf_alternatives

        if self.target == "tree":
            word = "word ::= [^ ()\\n]+\n"
            label = f"label ::= {gbnf_alternatives(self.labels)}\n" if self.labels else ""
            return Constraint.gbnf(
                "root ::= \" \"? tree \"\\n\"?\n"
                f"tree ::= \"(\" {'label? ' if self.labels else ''}(\" \"+ (tree | word))+ \" \"* \")\"\n"
                + word + label)
        tag = gbnf_alternatives(self.tags) if self.tags else '"O" | [BI] "-" [^ \\n]+'
        word = "word ::= [^ |\\n]+\n"
        intent = "intent \" | \" " if self.intents else ""
        rules = (f"root ::= \" \"? {intent}pair (\" \" pair)* \"\\n\"?\n"
                 "pair ::= word \" \" tag\n" + word + f"tag ::= {tag}\n")
        if self.intents:
            rules += f"intent ::= {gbnf_alternatives(self.intents)}\n"
        return Constraint.gbnf(rules)

    def parse_detailed(self, raw: str, text: str) -> tuple[str, dict[str, Any]]:
        """(repaired target, {"repairs": {action: count}}) for a reply to input ``text``; raises
        ParseError when the reply cannot be repaired into a target over the input words."""
        words = text.split()
        if self.target == "tree":
            from ..formats.trees import repair

            rep = repair(raw, words, labels=self.labels, max_edit=self.max_edit)
            return rep.tree, {"repairs": rep.actions}
        from ..formats.slots import repair_slots

        target, acts = repair_slots(raw, words, with_intent=bool(self.intents), max_edit=self.max_edit)
        return target, {"repairs": acts}

    def parse(self, raw: str, text: str | None = None) -> str:
        """The repaired target. Repair needs the input words: without ``text`` the reply's own
        words are taken as the input (brackets / tags are still validated and repaired)."""
        if text is None:
            if self.target == "tree":
                from ..formats.trees import tree_words

                text = " ".join(tree_words(raw.replace("```", " ")))
            else:
                from ..formats.slots import TAG

                body = raw.split("|", 1)[-1]
                text = " ".join(t for t in body.split() if not TAG.match(t))
            if not text.strip():
                raise ParseError(raw, "a bracketed tree" if self.target == "tree" else "word tag pairs")
        return self.parse_detailed(raw, text)[0]

    def postprocess(self, text: str, raw: str) -> tuple[str | None, dict[str, Any]]:
        """For students: (repaired target or None when it cannot be repaired, details)."""
        try:
            return self.parse_detailed(raw, text)
        except ParseError as exc:
            return None, {"error": exc.expected}

    def label_logprob(self, reply: Reply) -> float | None:
        if not reply.token_logprobs:
            return None
        return float(sum(reply.token_logprobs) / len(reply.token_logprobs))

    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]:
        """Bracket scores (trees) or slot scores; a prediction not yet repaired against the gold
        words is repaired here (or becomes an abstention), so stale outputs score correctly."""
        fixed: list[str | None] = []
        for g, p in zip(gold, pred):
            if p is None:
                fixed.append(None)
                continue
            words = self._words(g)
            if self._words(p) == words:
                fixed.append(p)
                continue
            try:
                fixed.append(self.parse_detailed(p, " ".join(words))[0])
            except ParseError:
                fixed.append(None)
        if len(fixed) != len(gold):
            raise ValueError(f"gold has {len(gold)} items, predictions {len(pred)}")
        if self.target == "tree":
            from ..formats.trees import bracket_scores

            return bracket_scores(gold, fixed, labels=self.labels or None)
        from ..formats.slots import slot_scores

        return slot_scores(gold, fixed)

    def _words(self, target: str) -> list[str]:
        if self.target == "tree":
            from ..formats.trees import tree_words

            return tree_words(target)
        from ..formats.slots import parse_target

        try:
            return parse_target(target)[1]
        except ValueError:
            return []
