"""Teacher labeling on a Ray cluster: ``llmkd label CONFIG --executor ray [--address ...]``.

1. The driver looks every item up in its teacher cache (:class:`~llmkd.teachers.cache.CachedTeacher`
   with ``cache_only=True``): an item whose answers are all cached is labeled there, as a local run
   labels it. Only the misses go on.
2. The misses go through Ray Data: ``map_batches`` over an actor pool; each actor holds one teacher
   built from the config (llama.cpp on a CPU node: one actor per ``cpus_per_worker`` cores) and
   labels its batches with :func:`llmkd.labeling.label_examples` (the code of a local run, in the
   same chunks) against a private in-memory cache, then hands back the answers it got
   (:meth:`~llmkd.teachers.cache.TeacherCache.drain`) and its labels.
3. The driver alone writes the answers into its SQLite cache, as they arrive (a killed run loses
   at most the batches in flight), so the cache's WAL is never shared over a network file system;
   then it labels the misses from the cache, so the labels are those of a local run and a later
   ``llmkd run`` finds every answer cached. An answer that is never cached (a prompt too long for
   the teacher's context, option scores that are all ``-inf``) keeps the actor's label.

Every node needs llmkd with the config's teacher extra and the teacher's model (the zoo pulls it
on first use); an answer filed under another teacher fingerprint than the driver's (another model
file on a worker) stops the run with a :class:`~llmkd.errors.TeacherError`.

A teacher that spreads its own requests over the cluster (``runs_on_ray``: the ``vllm`` backend,
:mod:`llmkd.teachers.vllm_ray`, vLLM engines through ``ray.data.llm`` on GPU nodes) skips step 2's
actors: the driver asks it for the misses through its cached wrapper, so the driver still writes
every answer and the labels are those of a local run with that teacher.

Not handled: mixing the two (llama.cpp actors on CPU nodes and vLLM engines on GPU nodes in one
run); a run has one teacher. See docs/scale-out.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import ConfigError, TeacherError, require
from .labeling import Demonstrations, as_demonstrations, label_examples
from .tasks.base import ScoresOptions
from .teachers.cache import CachedTeacher, CacheMiss, TeacherCache
from .types import Example, TeacherLabel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    id: str
    text: str


class _Labeler:
    """One Ray actor: a teacher (built once, on first use) behind a private in-memory cache."""

    def __init__(self, make_teacher: Callable[[], Any], task: Any, shots: Sequence[Example] | Demonstrations,
                 settings: dict[str, Any]) -> None:
        self.cache = TeacherCache(":memory:")
        self.teacher = CachedTeacher(make_teacher(), self.cache)
        self.task = task
        self.shots = as_demonstrations(shots)  # per_query draws are seeded by the item: the driver's prompts
        self.settings = settings

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        items = [_Item(str(i), str(t)) for i, t in zip(batch["id"], batch["text"])]
        labels = label_examples(self.task, self.teacher, items, self.shots, progress=False, **self.settings)
        # one row per batch, as JSON text (Arrow would turn the dicts into structs of its own)
        return {"index": [json.dumps([int(i) for i in batch["index"]])],
                "labels": [json.dumps([lab.to_dict() for lab in labels])],
                "entries": [json.dumps([list(e) for e in self.cache.drain()])]}


def label_on_ray(task: Any, teacher: CachedTeacher, make_teacher: Callable[[], Any], items: Sequence[Any],
                 shots: Sequence[Example] | Demonstrations, *, mode: str = "generate", confidence: bool = True, max_tokens: int = 8,
                 temperature: float = 0.0, constrained: bool = False, stage: str = "teacher",
                 desc: str = "labeling", progress: bool = True, address: str | None = None,
                 workers: int | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 batch_size: int | None = None) -> list[TeacherLabel]:
    """Label ``items`` as :func:`llmkd.labeling.label_examples` does, the cache misses on a Ray
    cluster (see the module docstring). ``teacher``: the driver's cached teacher (its cache is
    the one written); ``make_teacher()``: builds the same teacher on a worker (picklable, e.g.
    ``functools.partial(llmkd.build.build_teacher, cfg.teacher)``).

    ``address``: the cluster (``ray.init(address=...)``; None joins the one ``RAY_ADDRESS``
    names, else starts a local one on 127.0.0.1, which is shut down at the end).
    ``workers``: actors (default: the cluster's CPUs over ``cpus_per_worker``, or its GPUs over
    ``gpus_per_worker``). ``batch_size``: items per Ray batch (default: about four batches per
    actor, at most 64). Order is preserved."""
    settings = {"mode": mode, "confidence": confidence, "max_tokens": max_tokens, "temperature": temperature,
                "stage": stage, "constrained": constrained}
    reader = CachedTeacher(teacher.teacher, teacher.cache, cache_only=True)
    out: list[TeacherLabel | None] = [None] * len(items)
    misses: list[int] = []
    for i, x in enumerate(items):  # 1. what the cache already answers
        try:
            out[i] = label_examples(task, reader, [x], shots, progress=False, **settings)[0]
        except CacheMiss:
            misses.append(i)
    log.info("%s: %d of %d items answered by the cache; %d go to the Ray cluster", desc, len(items) - len(misses),
             len(items), len(misses))
    teacher.hits += reader.hits  # the answers read back in step 3 were misses (counted as such), not hits
    teacher.cached_seconds += reader.cached_seconds
    if misses and getattr(teacher.teacher, "runs_on_ray", False):
        # a teacher that spreads its own requests over the cluster (vllm: ray.data.llm engines): the
        # driver asks it for the misses, so its cached wrapper is the one process that writes the cache
        options = task.options() if isinstance(task, ScoresOptions) else None
        both = mode == "generate" and confidence and options
        alongside = teacher.teacher.score_alongside(options) if both and hasattr(teacher.teacher, "score_alongside") \
            else contextlib.nullcontext()
        with cluster(address), alongside:  # vllm: the option scores in generate's pipeline, one model load
            got = label_examples(task, teacher, [items[i] for i in misses], shots, progress=progress, desc=desc,
                                 **settings)
        for i, lab in zip(misses, got):
            out[i] = lab
        misses = []
    if misses:
        remote = _run_on_ray([_Item(str(items[i].id), items[i].text) for i in misses], misses, teacher,
                             make_teacher, task, shots, settings, desc=desc, progress=progress, address=address,
                             workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                             batch_size=batch_size)
        for i in misses:  # 3. the misses, from the cache the actors' answers went into
            try:
                out[i] = label_examples(task, reader, [items[i]], shots, progress=False, **settings)[0]
            except CacheMiss:  # an answer that is never cached (too long, all -inf scores): the actor's label
                out[i] = remote[i]
    labels = [lab for lab in out if lab is not None]
    n_long = sum(lab.error.startswith("too_long") for lab in labels)
    if n_long:
        log.warning("%d of %d inputs do not fit the teacher's context with the demonstrations and abstained "
                    "(error 'too_long' in their provenance); raise teacher.n_ctx to label them", n_long, len(labels))
    return labels


def _run_on_ray(todo: list[_Item], index: list[int], teacher: CachedTeacher, make_teacher: Callable[[], Any],
                task: Any, shots: Sequence[Example] | Demonstrations, settings: dict[str, Any], *, desc: str,
                progress: bool, address: str | None, workers: int | None, cpus_per_worker: float,
                gpus_per_worker: float, batch_size: int | None) -> dict[int, TeacherLabel]:
    """2. Label ``todo`` on the cluster; store the answers in ``teacher.cache`` as they arrive;
    return the actors' labels by item index."""
    from tqdm.auto import tqdm

    with cluster(address) as ray:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours below counts items
        ctx.print_on_execution_start = False
        n = workers or _default_workers(ray, cpus_per_worker, gpus_per_worker)
        size = batch_size or max(1, min(64, math.ceil(len(todo) / (4 * n))))
        ds = ray.data.from_items([{"index": i, "id": x.id, "text": x.text} for i, x in zip(index, todo)])
        ds = ds.map_batches(_Labeler, batch_size=size, compute=ray.data.ActorPoolStrategy(size=n),
                            fn_constructor_kwargs={"make_teacher": make_teacher, "task": task, "shots": as_demonstrations(shots),
                                                   "settings": settings},
                            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None, batch_format="numpy")
        log.info("%s: %d items on %d Ray actors, %d per batch", desc, len(todo), n, size)
        fp = teacher.fingerprint
        labels: dict[int, TeacherLabel] = {}
        bar = tqdm(total=len(todo), desc=f"{desc} (ray)", disable=not progress, unit="ex")
        for row in ds.iter_rows():
            entries = json.loads(row["entries"])
            stray = {e[1] for e in entries if e[1] != fp}
            if stray:
                raise TeacherError(
                    f"a Ray worker's teacher has fingerprint {sorted(stray)[0]!r}, the driver's {fp!r}: the worker "
                    "runs another model file or backend version, so its answers would be filed where no run finds "
                    "them. Give every node the same model (llmkd models pull) and llmkd version; nothing of this "
                    "batch was cached.")
            for key, efp, kind, value, seconds in entries:
                teacher.cache.put(key, efp, kind, value, seconds)
                teacher.misses += 1
                teacher.seconds += seconds
            index_of = json.loads(row["index"])
            for i, lab in zip(index_of, json.loads(row["labels"])):
                labels[int(i)] = TeacherLabel.from_dict(lab)
            bar.update(len(index_of))
        bar.close()
        return labels


@contextlib.contextmanager
def cluster(address: str | None, **join: Any) -> Iterator[Any]:
    """Ray, joined to a cluster (:func:`join_cluster`, with its keyword arguments ``join``); a
    cluster joined here is left at the end."""
    ray, started = join_cluster(address, **join)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def join_cluster(address: str | None, *, extra: str = "ray", what: str = "labeling on a Ray cluster (--executor ray)",
                 data: bool = True) -> tuple[Any, bool]:
    """(the ``ray`` module, whether this call joined): join the cluster ``address`` names (None:
    ``RAY_ADDRESS``, else start a local one on 127.0.0.1, reachable from this machine only),
    unless this process has joined one already. A missing ``ray`` (with ``data``: ``ray[data]``)
    names ``llmkd[extra]``; a cluster that cannot be joined is a :class:`ConfigError` naming
    ``--address`` / ``RAY_ADDRESS`` and the fix. Used by labeling, by the vLLM teacher, by
    :mod:`llmkd.ray_students` and by the benchmarks' Ray cells."""
    import os

    ray = require("ray", extra, what)
    if data:
        require("ray.data", extra, what)
    if ray.is_initialized():
        return ray, False
    named = address or os.environ.get("RAY_ADDRESS")
    where = {"address": named} if named else {"address": "local", "_node_ip_address": "127.0.0.1"}
    try:
        ray.init(**where, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        source = "--address" if address else "RAY_ADDRESS"
        raise ConfigError(f"{source}={named}: no Ray cluster could be joined there ({exc}). Start one there "
                          "(ray start --head --port 6379) and give its HOST:PORT, or leave out --address and unset "
                          "RAY_ADDRESS to start a local one") from exc
    return ray, True


def _default_workers(ray: Any, cpus_per_worker: float, gpus_per_worker: float) -> int:
    res = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(res.get("GPU", 0) // gpus_per_worker))
    return max(1, int(res.get("CPU", 1) // cpus_per_worker))
