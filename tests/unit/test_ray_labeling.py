"""Labeling on a local Ray cluster (127.0.0.1, 2 CPUs, started and stopped here): the cache
misses go to Ray actors, the driver alone writes the cache, and the labels are those of a local
run; a second pass finds everything cached and starts no cluster."""

from __future__ import annotations

import pytest

from llmkd.labeling import Demonstrations, label_examples
from llmkd.tasks import ClassificationTask
from llmkd.teachers import CachedTeacher, TeacherCache
from llmkd.types import Example
from tests.fakes import ScriptedTeacher

LABELS = ("negative", "positive")
ITEMS = [Example(f"u{i}", f"review number {i} {'great' if i % 3 else 'awful'} film", None) for i in range(50)]
SHOTS = (Example("s0", "a great film", "positive"), Example("s1", "an awful film", "negative"))
# task.demonstrations: per_query: each item's own draw, which the actors must render as the driver does
PER_QUERY = Demonstrations(tuple(Example(f"g{i}", f"gold film {i}", LABELS[i % 2]) for i in range(6)), k=2, seed=1)


def _reply(text: str) -> str:
    return "positive" if "great" in text else ("negative" if int(text.split()[2]) % 2 else "not a label")


def make_teacher() -> ScriptedTeacher:
    """The deterministic fake teacher, built on each Ray worker (as build_teacher would be)."""
    scores = {x.text: [-0.1 - (i % 7) / 10, -0.7 + (i % 5) / 10] for i, x in enumerate(ITEMS)}
    return ScriptedTeacher(_reply, scores=scores)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("shots", [SHOTS, PER_QUERY], ids=["fixed", "per-query"])
def test_ray_labels_equal_local_labels_and_the_driver_fills_the_cache(cluster, tmp_path, shots) -> None:
    from llmkd.ray_labeling import label_on_ray

    task = ClassificationTask(labels=LABELS)
    local = label_examples(task, CachedTeacher(make_teacher(), TeacherCache(tmp_path / "local.sqlite")), ITEMS, shots,
                           progress=False)
    cache = TeacherCache(tmp_path / "ray.sqlite")
    driver = CachedTeacher(make_teacher(), cache)
    first = ITEMS[:5]  # already cached before the cluster is asked: labeled by the driver
    label_examples(task, driver, first, shots, progress=False)
    remote = label_on_ray(task, driver, make_teacher, ITEMS, shots, progress=False, workers=2, batch_size=8)
    assert remote == local
    assert sum(lab.abstained for lab in remote) > 0  # the unparseable replies stayed abstentions
    stats = cache.stats()
    assert stats["entries"] == 100 and stats["repeated_calls"] == 0  # generate + score per item, each asked once
    assert driver.misses == 100 and driver.hits == 10  # the 5 items cached before: generate + score each
    assert len(driver.teacher.generate_calls) == 5  # the driver's own teacher answered only its 5 items

    # a later local run finds every answer cached: it never asks its teacher
    later = CachedTeacher(make_teacher(), cache, cache_only=True)
    assert label_examples(task, later, ITEMS, shots, progress=False) == local


def test_everything_cached_needs_no_cluster(tmp_path, monkeypatch) -> None:
    from llmkd import ray_labeling

    task = ClassificationTask(labels=LABELS)
    teacher = CachedTeacher(make_teacher(), TeacherCache(tmp_path / "c.sqlite"))
    local = label_examples(task, teacher, ITEMS[:10], SHOTS, progress=False)
    monkeypatch.setattr(ray_labeling, "_run_on_ray", lambda *a, **k: pytest.fail("asked the cluster"))
    again = ray_labeling.label_on_ray(task, teacher, make_teacher, ITEMS[:10], SHOTS, progress=False)
    assert again == local


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch) -> None:
    import sys

    from llmkd.errors import MissingExtraError
    from llmkd.ray_labeling import label_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    teacher = CachedTeacher(make_teacher(), TeacherCache(tmp_path / "c.sqlite"))
    with pytest.raises(MissingExtraError, match=r"pip install 'llmkd\[ray\]'"):
        label_on_ray(ClassificationTask(labels=LABELS), teacher, make_teacher, ITEMS[:2], SHOTS, progress=False)


def test_an_unknown_executor_is_a_config_error(tmp_path) -> None:
    from llmkd import api
    from llmkd.config import parse_config
    from llmkd.errors import ConfigError

    cfg = parse_config({"name": "x", "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "t.jsonl")},
                        "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="executor: allowed values are 'local' and 'ray' \\(got 'dask'\\)"):
        api.label(cfg, executor="dask")
    assert not (tmp_path / "x").exists()  # refused before anything is written
