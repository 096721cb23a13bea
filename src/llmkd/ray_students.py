"""Independent students as parallel Ray tasks: ``llmkd run CONFIG --executor ray [--address ...]``.

A method hands students that do not depend on each other to :func:`llmkd.methods.base.fit_independent`
(MCKD: the part students of one stage). With ``executor="ray"`` the context carries a
:class:`RayStudents`, which trains them as Ray tasks:

1. A student whose folder in the run directory is already finished (``progress.json`` says done:
   a resumed run) is not sent anywhere: the driver loads it and lets it predict, as a local run does.
2. Every other student is one Ray task (``cpus_per_task`` CPUs, ``gpus_per_task`` GPUs). The task
   gets a copy of the run context without the teacher (and without the pool: the job carries its
   own training examples and the items to relabel), trains the student with the method's own code
   in a scratch folder of its node, drops the optimizer state (a finished student never trains
   again; ``llmkd run`` drops it at the end of a method anyway), and returns the method's result
   (predictions, report) with the student's folder packed as an uncompressed tar.
3. Only the driver writes the run folder: as each task finishes it unpacks the folder next to its
   place and renames it in (``<tag>.incoming`` -> ``<tag>``), so the run folder looks as after a
   local run and a killed run resumes with every student that had arrived.

The teacher is never asked from a task (the labels come from the driver's cache before the
students train). The results are those of the local path for the same seeds: the same code
trains the same student from the same examples and seed. Bit-identical floating point needs the
same number of torch threads on both sides: set ``student.threads`` (a Ray task otherwise gets
``OMP_NUM_THREADS`` = its CPUs).

Not handled: a student killed while training in a task starts over on resume (its checkpoints
were in the task's scratch folder); per-epoch progress bars of the tasks are not shown (the
driver shows one bar over the students and logs each as it arrives).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .errors import require
from .io import read_json
from .students.checkpoint import drop_optimizer_state

log = logging.getLogger(__name__)
J = TypeVar("J")
R = TypeVar("R")
WHAT = "training independent students as Ray tasks (--executor ray)"


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a student that finished training (``progress.json`` done)."""
    try:
        return bool(read_json(folder / "progress.json").get("done"))
    except (OSError, ValueError):
        return False


class RayStudents:
    """The :class:`~llmkd.methods.base.StudentExecutor` of ``--executor ray`` (see the module
    docstring). ``address``: the cluster (joined on first use; None: ``RAY_ADDRESS``, else a
    local one); ``cpus_per_task`` / ``gpus_per_task``: what one student task asks for.
    :meth:`close` leaves a cluster this object joined."""

    def __init__(self, *, address: str | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0) -> None:
        self.ray = require("ray", "ray", WHAT)
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self._joined = False
        self._remote: Any = None

    def _fit(self) -> Any:
        if self._remote is None:
            from .ray_labeling import join_cluster

            self._joined = join_cluster(self.address, what=WHAT, data=False)[1]
            self._remote = self.ray.remote(_fit_in_task).options(
                num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task or None, max_retries=0)
        return self._remote

    def map(self, ctx: Any, fn: Callable[[Any, J], R], jobs: Sequence[J], *, tags: Sequence[str],
            desc: str = "students") -> list[R]:
        """``[fn(ctx, job) for job in jobs]``, the unfinished jobs as Ray tasks (in parallel), the
        students' folders moved into ``ctx.workdir`` by this process as they arrive."""
        from tqdm.auto import tqdm

        out: dict[int, R] = {}
        todo = [i for i, tag in enumerate(tags) if not finished(ctx.workdir / tag)]
        bar = tqdm(total=len(jobs), desc=f"{desc} (ray)", disable=not ctx.progress, unit="student")
        for i in sorted(set(range(len(jobs))) - set(todo)):  # 1. finished earlier: load and predict here
            log.info("%s: finished in an earlier run; loading it", tags[i])
            out[i] = fn(ctx, jobs[i])
            bar.update(1)
        if todo:
            remote = self._fit()
            shipped = dataclasses.replace(ctx, teacher=None, pool=(), executor=None, human_labels={}, progress=False)
            ref = self.ray.put(shipped)
            pending = {remote.remote(ref, fn, jobs[i], tags[i]): i for i in todo}  # 2. the others, as Ray tasks
            log.info("%s: %d students as Ray tasks (%g CPUs%s each)", desc, len(todo), self.cpus_per_task,
                     f", {self.gpus_per_task:g} GPUs" if self.gpus_per_task else "")
            try:
                while pending:
                    ready, _ = self.ray.wait(list(pending), num_returns=1)
                    i = pending.pop(ready[0])
                    result, packed, seconds = self.ray.get(ready[0])
                    _unpack(packed, ctx.workdir, tags[i])  # 3. the driver alone writes the run folder
                    out[i] = result
                    log.info("%s: trained in a Ray task in %.1f s", tags[i], seconds)
                    bar.update(1)
            finally:
                for ref_ in pending:  # an error (or a kill) stops the students still training
                    self.ray.cancel(ref_, force=True)
        bar.close()
        return [out[i] for i in range(len(jobs))]

    def close(self) -> None:
        if self._joined:
            self.ray.shutdown()
            self._joined = False
        self._remote = None


def _fit_in_task(ctx: Any, fn: Callable[[Any, J], R], job: J, tag: str) -> tuple[R, bytes, float]:
    """The Ray task: ``fn(ctx, job)`` with the context's work directory in a scratch folder;
    returns its result, the student's folder as tar bytes (optimizer state dropped) and the seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmkd-student-") as tmp:
        result = fn(dataclasses.replace(ctx, workdir=Path(tmp)), job)
        folder = Path(tmp) / tag
        drop_optimizer_state(folder)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(folder, arcname=tag)
        return result, buf.getvalue(), time.perf_counter() - t0


def _unpack(packed: bytes, workdir: Path, tag: str) -> None:
    """Put a task's student folder at ``workdir/tag``: unpacked beside it, then renamed in (an
    unfinished folder of an earlier run there is replaced)."""
    incoming = workdir / f"{tag}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r") as tar:
        tar.extractall(incoming, filter="data")
    target = workdir / tag
    if target.exists():
        shutil.rmtree(target)
    os.replace(incoming / tag, target)
    incoming.rmdir()
