"""TeacherCache + CachedTeacher with a scripted fake teacher: hits make no teacher calls, only
misses are sent on, the key covers fingerprint / kind / prompt / parameters, and a rerun (a new
cache object on the same file) asks the teacher nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from llmkd.teachers.base import Teacher
from llmkd.teachers.cache import CachedTeacher, TeacherCache, cache_key
from llmkd.types import Reply


class FakeTeacher:
    """Replies ``<prefix>:<prompt>``; scores option i of a prompt as ``-i - len(prompt)``.
    Records every prompt it is really asked."""

    name = "fake"

    def __init__(self, fingerprint: str = "fp-a", prefix: str = "reply") -> None:
        self._fingerprint = fingerprint
        self.prefix = prefix
        self.generated: list[list[str]] = []
        self.scored: list[list[str]] = []

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def calls(self) -> int:
        return len(self.generated) + len(self.scored)

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[Reply]:
        self.generated.append(list(prompts))
        return [Reply(f"{self.prefix}:{p}", tokens=(self.prefix, p), token_logprobs=(-0.5, -0.25),
                      prompt_tokens=len(p), completion_tokens=2) for p in prompts]

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        self.scored.append(list(prompts))
        return [[-float(i) - len(p) for i in range(len(options))] for p in prompts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def gen(t: CachedTeacher, prompts: list[str], **kw) -> list[str]:
    args = {"max_tokens": 8}
    args.update(kw)
    return [r.text for r in t.generate(prompts, **args)]


@pytest.fixture
def cache(tmp_path: Path):
    c = TeacherCache(tmp_path / "cache" / "teacher.sqlite")
    yield c
    c.close()


def test_fake_teacher_is_a_teacher() -> None:
    assert isinstance(FakeTeacher(), Teacher)


def test_second_identical_call_makes_no_teacher_call(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    first = t.generate(["a", "b"], max_tokens=8, stop=["\n"])
    second = t.generate(["a", "b"], max_tokens=8, stop=["\n"])
    assert inner.generated == [["a", "b"]]
    assert second == first  # the whole reply survives the round trip, logprobs included
    assert first[0] == Reply("reply:a", ("reply", "a"), (-0.5, -0.25), 1, 2, "stop")
    assert (t.misses, t.hits) == (2, 2)
    assert (t.prompt_tokens, t.completion_tokens) == (4, 8)  # counted for cached replies too


def test_only_misses_are_forwarded_and_order_is_kept(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    gen(t, ["b", "d"])
    assert gen(t, ["a", "b", "c", "d", "e"]) == ["reply:a", "reply:b", "reply:c", "reply:d", "reply:e"]
    assert inner.generated == [["b", "d"], ["a", "c", "e"]]
    assert (t.misses, t.hits) == (5, 2)


def test_repeated_prompt_in_one_call_is_asked_once(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    assert gen(t, ["a", "b", "a"]) == ["reply:a", "reply:b", "reply:a"]
    assert inner.generated == [["a", "b"]]
    assert t.misses == 2
    assert cache.stats()["repeated_calls"] == 0


def test_all_hits_make_no_call_at_all(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    gen(t, ["a"])
    gen(t, ["a"])
    t.score_options(["a"], ["x", "y"])
    t.score_options(["a"], ["x", "y"])
    assert inner.generated == [["a"]] and inner.scored == [["a"]]


@pytest.mark.parametrize(
    "second",
    [
        {"fingerprint": "fp-b"},
        {"prompt": "a "},
        {"prompt": "A"},
        {"max_tokens": 9},
        {"temperature": 0.7},
        {"stop": ["\n", "."]},
    ],
    ids=["fingerprint", "prompt-space", "prompt-case", "max_tokens", "temperature", "stop"],
)
def test_any_change_of_the_key_is_a_miss(cache: TeacherCache, second: dict) -> None:
    first = {"fingerprint": "fp-a", "prompt": "a", "max_tokens": 8, "temperature": 0.0, "stop": ["\n"]}
    inner_a = FakeTeacher(first["fingerprint"])
    CachedTeacher(inner_a, cache).generate([first["prompt"]], max_tokens=first["max_tokens"],
                                           temperature=first["temperature"], stop=first["stop"])
    changed = {**first, **second}
    inner_b = FakeTeacher(changed["fingerprint"], prefix="second")
    (reply,) = CachedTeacher(inner_b, cache).generate([changed["prompt"]], max_tokens=changed["max_tokens"],
                                                      temperature=changed["temperature"], stop=changed["stop"])
    assert inner_b.generated == [[changed["prompt"]]]
    assert reply.text == f"second:{changed['prompt']}"


def test_seed_is_part_of_the_key_only_when_sampling(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    gen(t, ["a"], seed=1)
    gen(t, ["a"], seed=2)  # greedy: the seed changes nothing
    assert inner.generated == [["a"]]
    gen(t, ["a"], temperature=0.8, seed=1)
    gen(t, ["a"], temperature=0.8, seed=2)
    gen(t, ["a"], temperature=0.8, seed=1)
    assert inner.generated == [["a"], ["a"], ["a"]]


def test_score_options_is_cached_by_prompt_and_options(cache: TeacherCache) -> None:
    inner = FakeTeacher()
    t = CachedTeacher(inner, cache)
    assert t.score_options(["ab", "c"], ["x", "y"]) == [[-2.0, -3.0], [-1.0, -2.0]]
    assert t.score_options(["ab", "c"], ["x", "y"]) == [[-2.0, -3.0], [-1.0, -2.0]]
    assert inner.scored == [["ab", "c"]]
    t.score_options(["ab"], ["y", "x"])  # option order is part of the key
    t.score_options(["ab"], ["x", "y", "z"])
    assert inner.scored == [["ab", "c"], ["ab"], ["ab"]]
    gen(t, ["ab"])  # generate and score_options never share an entry
    assert inner.generated == [["ab"]]


def test_cache_key_covers_every_part() -> None:
    base = cache_key("fp", "generate", "p", {"max_tokens": 8})
    assert base == cache_key("fp", "generate", "p", {"max_tokens": 8})
    others = [cache_key("fp2", "generate", "p", {"max_tokens": 8}), cache_key("fp", "score_options", "p", {"max_tokens": 8}),
              cache_key("fp", "generate", "q", {"max_tokens": 8}), cache_key("fp", "generate", "p", {"max_tokens": 9})]
    assert len({base, *others}) == 5


def test_stats(cache: TeacherCache) -> None:
    t = CachedTeacher(FakeTeacher(), cache)
    gen(t, ["a", "b", "c"])
    gen(t, ["a", "b"])
    t.score_options(["a"], ["x"])
    t.score_options(["a"], ["x"])
    CachedTeacher(FakeTeacher("fp-b"), cache).score_options(["a"], ["x"])
    stats = cache.stats()
    assert {k: stats[k] for k in ("entries", "teacher_calls", "hits", "repeated_calls", "teachers")} == {
        "entries": 5, "teacher_calls": 5, "hits": 3, "repeated_calls": 0, "teachers": 2}
    assert stats["path"] == str(cache.path) and stats["bytes"] > 0
    by_kind = {k: {f: v[f] for f in ("entries", "teacher_calls", "hits")} for k, v in stats["by_kind"].items()}
    assert by_kind == {"generate": {"entries": 3, "teacher_calls": 3, "hits": 2},
                       "score_options": {"entries": 2, "teacher_calls": 2, "hits": 1}}


def test_empty_cache_stats(cache: TeacherCache) -> None:
    stats = cache.stats()
    assert {k: stats[k] for k in ("entries", "teacher_calls", "hits", "repeated_calls", "teachers", "by_kind")} == {
        "entries": 0, "teacher_calls": 0, "hits": 0, "repeated_calls": 0, "teachers": 0, "by_kind": {}}


def test_a_rerun_on_the_same_file_asks_the_teacher_nothing(tmp_path: Path) -> None:
    path = tmp_path / "teacher.sqlite"
    first = TeacherCache(path)
    inner = FakeTeacher()
    replies = CachedTeacher(inner, first).generate(["a", "b"], max_tokens=8)
    scores = CachedTeacher(inner, first).score_options(["a"], ["x", "y"])
    first.close()

    second = TeacherCache(path)  # a new process, as far as the cache can tell
    rerun = FakeTeacher()
    t = CachedTeacher(rerun, second)
    assert t.generate(["a", "b"], max_tokens=8) == replies
    assert t.score_options(["a"], ["x", "y"]) == scores
    assert rerun.calls == 0 and (t.misses, t.hits) == (0, 3)
    stats = second.stats()
    assert (stats["entries"], stats["teacher_calls"], stats["hits"], stats["repeated_calls"]) == (3, 3, 3, 0)
    second.close()


def test_two_cache_objects_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "teacher.sqlite"
    a, b = TeacherCache(path), TeacherCache(path)
    CachedTeacher(FakeTeacher(), a).generate(["x"], max_tokens=8)
    inner = FakeTeacher()
    CachedTeacher(inner, b).generate(["x"], max_tokens=8)
    assert inner.calls == 0
    a.close()
    b.close()


def test_clear_by_fingerprint_prefix(cache: TeacherCache) -> None:
    CachedTeacher(FakeTeacher("abc123"), cache).generate(["a", "b"], max_tokens=8)
    CachedTeacher(FakeTeacher("abd456"), cache).generate(["a"], max_tokens=8)
    assert cache.clear("abc") == 2
    assert cache.stats()["entries"] == 1
    inner = FakeTeacher("abd456")
    CachedTeacher(inner, cache).generate(["a"], max_tokens=8)
    assert inner.calls == 0  # the other teacher's entry survives
    again = FakeTeacher("abc123")
    CachedTeacher(again, cache).generate(["a"], max_tokens=8)
    assert again.generated == [["a"]]  # cleared entries are misses again
    assert cache.clear("zzz") == 0
    assert cache.clear() == 2
    assert cache.stats()["entries"] == 0


def test_clear_prefix_is_not_a_pattern(cache: TeacherCache) -> None:
    CachedTeacher(FakeTeacher("abc"), cache).generate(["a"], max_tokens=8)
    assert cache.clear("a_c") == 0  # '_' is a LIKE wildcard; a prefix must match literally
    assert cache.clear("%") == 0
    assert cache.stats()["entries"] == 1


def test_cached_teacher_forwards_name_fingerprint_and_tokens(cache: TeacherCache) -> None:
    t = CachedTeacher(FakeTeacher("fp-z"), cache)
    assert (t.name, t.fingerprint, t.count_tokens("a b c"), t.batch_size) == ("fake", "fp-z", 3, 1)
    assert isinstance(t, Teacher)


def test_a_chat_turn_is_cached_apart_from_the_same_plain_text(cache: TeacherCache) -> None:
    from llmkd.teachers.base import ChatTurn

    fake = FakeTeacher()
    t = CachedTeacher(fake, cache)
    gen(t, ["same text"])
    gen(t, [ChatTurn("same text")])
    gen(t, [ChatTurn("same text")])
    assert fake.generated == [["same text"], ["same text"]]
    assert isinstance(fake.generated[1][0], ChatTurn)  # the teacher sees the marker


def test_the_shared_prefix_hint_is_keyed_only_for_backends_that_lay_out_by_it() -> None:
    from llmkd.tasks.base import Prompt

    hinted = Prompt("few shots\nText: p", shared=15)
    plain = "few shots\nText: p"
    assert cache_key("fp", "generate", hinted, {}) == cache_key("fp", "generate", plain, {})
    assert cache_key("fp", "generate", hinted, {}, layout=True) != cache_key("fp", "generate", plain, {}, layout=True)
    assert cache_key("fp", "generate", Prompt(plain), {}, layout=True) == cache_key("fp", "generate", plain, {}, layout=True)


# ---- issue 25 item 1: what is never cached ---------------------------------------------------


class NoScores(FakeTeacher):
    """Scores every option -inf, as a server without logprobs made the OpenAI teacher do."""

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        self.scored.append(list(prompts))
        return [[float("-inf")] * len(options) for _ in prompts]


def test_all_minus_inf_scores_are_not_cached_and_old_ones_are_asked_again(cache: TeacherCache) -> None:
    from llmkd.teachers.cache import cache_key

    t = CachedTeacher(NoScores(), cache)
    assert t.score_options(["p"], ["a", "b"]) == [[float("-inf")] * 2]
    assert cache.stats()["entries"] == 0
    # a row written before this check (issue 25: the -inf scores were cached) is not served
    key = cache_key("fp-a", "score_options", "q", {"options": ["a", "b"]})
    cache.put(key, "fp-a", "score_options", [float("-inf"), float("-inf")], 0.1)
    fixed = CachedTeacher(FakeTeacher(), cache)
    assert fixed.score_options(["q"], ["a", "b"]) == [[-1.0, -2.0]]
    assert fixed.teacher.scored == [["q"]] and fixed.misses == 1


@pytest.mark.parametrize(
    ("method", "bad", "problem"),
    [
        ("generate", {"text": 5, "tokens": [], "token_logprobs": None}, "a reply whose text is not a string"),
        ("score_options", [-1.0], "1 scores for 2 options"),
        ("score_options", [float("nan"), -1.0], "an option score that is NaN or +inf"),
        ("score_options", ["x", -1.0], "option scores that are not a list of numbers"),
    ],
)
def test_malformed_answers_raise_and_are_never_cached(cache: TeacherCache, method: str, bad, problem: str) -> None:
    from llmkd.errors import TeacherError

    class Bad(FakeTeacher):
        def generate(self, prompts, **kw):
            return [Reply.from_dict(bad) if p == "bad" else r for p, r in zip(prompts, super().generate(prompts, **kw))]

        def score_options(self, prompts, options):
            return [bad if p == "bad" else s for p, s in zip(prompts, super().score_options(prompts, options))]

    t = CachedTeacher(Bad(), cache)
    with pytest.raises(TeacherError) as info:
        if method == "generate":
            t.generate(["good", "bad"], max_tokens=8)
        else:
            t.score_options(["good", "bad"], ["a", "b"])
    assert f"1 of 2 {method} answers are malformed ({problem}" in str(info.value)
    assert cache.stats()["entries"] == 1  # the good one
