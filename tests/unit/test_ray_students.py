"""MCKD's part students as Ray tasks on a local cluster (127.0.0.1, 2 CPUs, started and stopped
here), with the scripted teacher and the fake student of test_mckd: the same labels, reports,
predictions and metrics as the local run, the same files in the one work folder (written by the
driver), a resumed stage that reloads its finished students instead of asking the cluster, and the
error that names the extra when Ray is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkd.methods.mckd import MCKD
from tests.unit.test_mckd import Log, make_ctx


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def files(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` and its text, but the per-evaluation timings of progress.json."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            text = f.read_text()
            if f.name == "progress.json":
                state = json.loads(text)
                state["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in state["history"]]
                text = json.dumps(state, sort_keys=True)
            out[str(f.relative_to(folder))] = text
    return out


@pytest.mark.parametrize("options", [{"stages": 2}, {"stages": 3, "final_every_stage": True}])
def test_mckd_students_on_ray_match_the_local_run(cluster, tmp_path: Path, monkeypatch, options) -> None:
    from llmkd.ray_students import RayStudents

    lctx = make_ctx(tmp_path / "local")
    local = MCKD(**options).run(lctx)
    ctx = make_ctx(tmp_path / "ray")
    ctx.executor = RayStudents(cpus_per_task=1)
    Log.fits = []
    remote = MCKD(**options).run(ctx)
    # only the last final student trained in this process (the part students, and with final_every_stage the
    # earlier finals, which train beside the next stage's part students, went to Ray)
    assert len({uid for uid, _ in Log.fits}) == 1
    assert remote.predictions == local.predictions and remote.metrics == local.metrics
    assert remote.labels == local.labels
    assert remote.extra["stages"] == local.extra["stages"]  # every part student's dev/test report
    assert remote.extra["finals"] == local.extra["finals"]
    assert files(tmp_path / "ray") == files(tmp_path / "local")  # the same run folder, students included
    assert ctx.teacher.generate_calls == lctx.teacher.generate_calls  # asked by the driver only, as locally

    # a resumed stage (its labels lost, its students finished) reloads them: no Ray task
    for name in ("labels-stage1.jsonl", "stage1.json"):
        (tmp_path / "ray" / name).unlink()
    monkeypatch.setattr(RayStudents, "_fit", lambda self: pytest.fail("sent a finished student to Ray"))
    again = MCKD(**options).run(ctx)
    assert again.predictions == local.predictions and again.extra["stages"] == local.extra["stages"]


def test_a_student_folder_left_unfinished_is_trained_again_on_ray(cluster, tmp_path: Path) -> None:
    from llmkd.ray_students import RayStudents

    local = MCKD(stages=2).run(make_ctx(tmp_path / "local"))
    ctx = make_ctx(tmp_path / "ray")
    stale = tmp_path / "ray" / "stage1-part0"
    stale.mkdir(parents=True)
    (stale / "progress.json").write_text(json.dumps({"done": False, "last": "epoch-1"}))  # a killed local run
    ctx.executor = RayStudents()
    assert MCKD(stages=2).run(ctx).predictions == local.predictions
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert not list((tmp_path / "ray").glob("*.incoming"))


def test_without_ray_the_error_names_the_extra_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    import sys

    from llmkd import api
    from llmkd.config import parse_config
    from llmkd.errors import ConfigError, MissingExtraError

    cfg = parse_config({"name": "x", "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "t.jsonl")},
                        "output_dir": str(tmp_path / "runs")})
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingExtraError, match=r"training independent students as Ray tasks \(--executor ray\) "
                                                r"needs the Python package 'ray'.*pip install 'llmkd\[ray\]'"):
        api.run(cfg, executor="ray")
    with pytest.raises(ConfigError, match=r"executor: allowed values are 'local' and 'ray' \(got 'dask'\)"):
        api.run(cfg, executor="dask")
    assert not (tmp_path / "runs").exists()


def square_in_a_task(cell: int) -> tuple[int, int]:
    import os

    return cell * cell, os.getpid()


def test_bench_cells_run_as_ray_tasks_in_order(cluster) -> None:
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from _common import run_cells

    seen: list[int] = []
    out = run_cells(square_in_a_task, [3, 1, 2], executor="ray", cpus=1, on_result=lambda cell, _: seen.append(cell))
    assert [r[0] for r in out] == [9, 1, 4] and sorted(seen) == [1, 2, 3]
    assert os.getpid() not in {r[1] for r in out}  # each cell ran in a Ray worker
    assert [r[0] for r in run_cells(square_in_a_task, [3, 1], executor="local")] == [9, 1]
