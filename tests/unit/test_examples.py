"""Every config in examples/ loads; the classification ones read their data files as SOURCE.md
counts them (skipped where ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkd.config import load_config
from llmkd.data import read_examples

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.methods


# (config, train rows, test rows, classes), counted in ../shared/data/<name>/SOURCE.md
COUNTS = [("ag_news", 10_001, 7_600, 4), ("banking77", 10_003, 3_080, 77), ("trec", 5_452, 500, 6)]


@pytest.mark.parametrize("name,n_train,n_test,n_classes", COUNTS, ids=[c[0] for c in COUNTS])
def test_example_data_reads_as_its_source_counts_it(name: str, n_train: int, n_test: int, n_classes: int) -> None:
    cfg = load_config(ROOT / "examples" / f"{name}.yaml")
    if not Path(cfg.data.train).exists():
        pytest.skip(f"{cfg.data.train} is not here (../shared/data)")
    train = read_examples(cfg.data.train, cfg.data, prefix="train:")
    test = read_examples(cfg.data.test, cfg.data, prefix="test:")
    assert (len(train), len(test)) == (n_train, n_test)
    assert len({e.label for e in train}) == len({e.label for e in test}) == n_classes
    if cfg.data.labels:
        assert {e.label for e in train} == set(cfg.data.labels)
