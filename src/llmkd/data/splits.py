"""Seeded splits: labeled / unlabeled pool / dev / test.

The gold labels of the unlabeled pool are kept in a :class:`~llmkd.data.vault.GoldVault`, which
is *not* part of :class:`Splits` and is never given to method code: it exists only for
after-the-fact reporting.

Data with classes is split per class (``data.split.labeled_per_class`` / ``dev_per_class``) or
by count (``labeled_n`` / ``dev_n``). NER sentences and seq2seq examples have no single class, so
they are split by count:

* labeled set: ``data.split.labeled_n`` (seq2seq: or ``labeled_per_class``, read as a total);
* dev set: ``data.split.dev_n`` (seq2seq: or ``dev_per_class``, read as a total), from
  ``data.dev`` when given, else from the rest of train;
* pool: ``pool_size`` of the rest; test: ``test_size`` of the test file (seeded sample).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass

from ..config import DataConfig
from ..errors import DataError
from ..types import Example, Unlabeled
from .readers import SEQ2SEQ_FORMATS, check_labels, label_vocabulary, read_examples, read_split
from .vault import GoldVault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    labels: tuple[str, ...]
    labeled: tuple[Example, ...]
    pool: tuple[Unlabeled, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]


def _take_per_class(items: list[Example], k: int, labels: list[str], rng: random.Random, what: str,
                    source: str) -> tuple[list[Example], list[Example]]:
    by_class: dict[str, list[Example]] = defaultdict(list)
    for ex in items:
        by_class[ex.label].append(ex)
    chosen: list[Example] = []
    for lab in labels:
        group = by_class.get(lab, [])
        if len(group) < k:
            setting = "labeled_per_class" if what == "labeled" else "dev_per_class"
            raise DataError(
                f"{source}: class {lab!r} has only {len(group)} example{'' if len(group) == 1 else 's'} left "
                f"for the {what} set, but "
                f"data.split.{setting}={k}; lower data.split.{setting} or add examples of {lab!r}"
            )
        chosen.extend(rng.sample(group, k))
    chosen_ids = {e.id for e in chosen}
    rng.shuffle(chosen)
    return chosen, [e for e in items if e.id not in chosen_ids]


def make_splits(cfg: DataConfig, seed: int) -> tuple[Splits, GoldVault]:
    """Read the files and make seeded splits. Returns the splits and the pool's gold vault."""
    if cfg.format in SEQ2SEQ_FORMATS:  # no classes: split by count
        return make_seq2seq_splits(cfg, seed)
    train = read_examples(cfg.train, cfg, prefix="train:")
    test = read_examples(cfg.test, cfg, prefix="test:")
    dev_file = read_examples(cfg.dev, cfg, prefix="dev:") if cfg.dev else None
    from ..formats.conll import check_tag_types, entity_types, is_tagged

    tagged = is_tagged(train)  # NER: labels are IOB2 tag tuples, data.labels the entity types
    if tagged:
        labels = list(cfg.labels) if cfg.labels else entity_types(train)
        if cfg.split.labeled_per_class is not None or cfg.split.dev_per_class is not None:
            raise DataError(
                f"{cfg.train}: NER sentences have no single class, so data.split.labeled_per_class / dev_per_class "
                "do not apply; set data.split.labeled_n and data.split.dev_n instead (e.g. {labeled_n: 50, dev_n: 50})"
            )
    else:
        labels = list(cfg.labels) if cfg.labels else sorted({e.label for e in train})
    check = check_tag_types if tagged else check_labels
    check(train, labels, cfg.train)
    check(test, labels, cfg.test)
    if dev_file is not None:
        check(dev_file, labels, cfg.dev or "")
    # example ids are unique per file: the readers reject a repeated id naming both lines

    rng = random.Random(seed)
    sp = cfg.split
    if sp.labeled_per_class is not None:
        labeled, rest = _take_per_class(train, sp.labeled_per_class, labels, rng, "labeled", cfg.train)
    else:
        assert sp.labeled_n is not None
        if sp.labeled_n >= len(train):
            raise DataError(f"{cfg.train}: data.split.labeled_n={sp.labeled_n} leaves no unlabeled pool ({len(train)} examples)")
        shuffled = train[:]
        rng.shuffle(shuffled)
        labeled, rest = shuffled[: sp.labeled_n], shuffled[sp.labeled_n :]

    if sp.dev_per_class is not None:
        dev_source = dev_file if dev_file is not None else rest
        dev, remaining = _take_per_class(dev_source, sp.dev_per_class, labels, rng, "dev",
                                         cfg.dev if dev_file is not None and cfg.dev else cfg.train)
        if dev_file is None:
            rest = remaining
    elif sp.dev_n is not None:  # n in total: from the dev file if given, else from the rest of train
        if dev_file is not None:
            dev = random.Random(seed + 2).sample(dev_file, min(sp.dev_n, len(dev_file)))
        else:
            if sp.dev_n >= len(rest):
                raise DataError(f"{cfg.train}: data.split.dev_n={sp.dev_n} leaves no unlabeled pool "
                                f"({len(rest)} examples after the labeled set); lower it or give data.dev")
            dev, rest = rest[: sp.dev_n], rest[sp.dev_n :]
    else:
        dev = list(dev_file) if dev_file is not None else []

    rest = rest[:]
    rng.shuffle(rest)
    pool_ex = rest[: sp.pool_size] if sp.pool_size is not None else rest
    if sp.pool_size is not None and sp.pool_size > len(rest):
        log.warning("%s: data.split.pool_size=%d but only %d examples are left after the labeled and dev "
                    "sets; the pool has %d", cfg.train, sp.pool_size, len(rest), len(rest))
    if not pool_ex:
        raise DataError(
            f"{cfg.train}: the unlabeled pool is empty after taking the labeled and dev examples; "
            "use a larger train file or smaller data.split sizes"
        )
    if sp.test_size is not None and sp.test_size < len(test):
        test = random.Random(seed + 1).sample(test, sp.test_size)
    pool = tuple(Unlabeled(id=e.id, text=e.text) for e in pool_ex)
    vault = GoldVault({e.id: e.label for e in pool_ex})
    return Splits(tuple(labels), tuple(labeled), pool, tuple(dev), tuple(test)), vault


def make_seq2seq_splits(cfg: DataConfig, seed: int) -> tuple[Splits, GoldVault]:
    """Seeded splits of seq2seq data, drawn by count (see the module docstring)."""
    train = read_split(cfg.train, cfg, "train")
    test = read_split(cfg.test, cfg, "test")
    dev_file = read_split(cfg.dev, cfg, "dev") if cfg.dev else None
    sp = cfg.split
    n_lab = sp.labeled_n if sp.labeled_n is not None else sp.labeled_per_class
    n_dev = sp.dev_n if sp.dev_n is not None else (sp.dev_per_class or 0)
    assert n_lab is not None
    rng = random.Random(seed)
    rest = train[:]
    rng.shuffle(rest)
    if n_lab + (0 if dev_file is not None else n_dev) >= len(rest):
        raise DataError(f"{cfg.train}: {len(rest)} examples cannot give {n_lab} labeled + {n_dev} dev examples "
                        "and a pool; lower data.split.labeled_n / dev_n")
    labeled, rest = rest[:n_lab], rest[n_lab:]
    if dev_file is not None:
        dev = random.Random(seed + 2).sample(dev_file, min(n_dev, len(dev_file))) if n_dev else []
    else:
        dev, rest = rest[:n_dev], rest[n_dev:]
    pool_ex = rest[: sp.pool_size] if sp.pool_size is not None else rest
    if sp.test_size is not None and sp.test_size < len(test):
        test = random.Random(seed + 1).sample(test, sp.test_size)
    labels = tuple(cfg.labels) if cfg.labels else label_vocabulary(train + (dev_file or []), cfg)
    pool = tuple(Unlabeled(id=e.id, text=e.text) for e in pool_ex)
    vault = GoldVault({e.id: e.label for e in pool_ex})
    return Splits(labels, tuple(labeled), pool, tuple(dev), tuple(test)), vault


def full_train(cfg: DataConfig, splits: Splits, vault: GoldVault) -> tuple[Example, ...]:
    """The gold labeled set plus the gold labels of the pool: the supervised-full upper bound.
    Only the runner calls this, for the ``supervised_full`` baseline."""
    return splits.labeled + tuple(Example(u.id, u.text, vault.label_of(u.id)) for u in splits.pool)
