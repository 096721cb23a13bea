"""Reading and splitting seq2seq data (``data.format: brackets`` or ``slots``).

Seq2seq examples have no classes: the label is the target string (a linearized tree, see
:mod:`llmkd.trees`, or a word/tag sequence, see :mod:`llmkd.slots`) and ``text`` is the input
words joined by single spaces. Splits are therefore drawn by count, not per class:

* labeled set: ``data.split.labeled_n`` (or ``labeled_per_class``, read as a total);
* dev set: ``data.split.dev_n`` (or ``dev_per_class``, read as a total), from ``data.dev`` when
  given, else from the rest of train;
* pool: ``pool_size`` of the rest; test: ``test_size`` of the test file (seeded sample).

``Splits.labels`` carries what the task and student need to know of the label vocabulary:
the constituent labels of labeled trees (empty for unlabeled trees), and for slots the tag set
followed by the intents.
"""

from __future__ import annotations

import random
from pathlib import Path

from .config import DataConfig
from .errors import DataError
from .types import Example, Unlabeled

FORMATS = ("brackets", "slots")


def read_split(path: str | Path, cfg: DataConfig, split: str) -> list[Example]:
    """Examples of one split (``train`` / ``dev`` / ``test``) of a seq2seq data source."""
    from .trees import clean, linearize, read_treebank

    prefix = f"{split}:"
    if cfg.format == "slots":
        from .slots import read_slots

        return read_slots(path, with_intent=cfg.with_intent, encoding=cfg.encoding, prefix=prefix)
    out: list[Example] = []
    for tree_id, tree in read_treebank(path, members=cfg.members.get(split), encoding=cfg.encoding):  # type: ignore[arg-type]
        cleaned = clean(tree)
        if cleaned is None:
            continue  # a tree of punctuation / traces only has no words to parse
        target = linearize(cleaned, labeled=cfg.tree_labels)
        words = cleaned.leaves()
        out.append(Example(prefix + tree_id, " ".join(words), target))
    if not out:
        raise DataError(f"{path}: no trees with words found for split {split!r}")
    return out


def label_vocabulary(examples: list[Example], cfg: DataConfig) -> tuple[str, ...]:
    from .slots import parse_target
    from .trees import tree_labels

    if cfg.format == "brackets":
        if not cfg.tree_labels:
            return ()
        return tuple(sorted(set().union(*(tree_labels(e.label) for e in examples))))
    tags: set[str] = set()
    intents: set[str] = set()
    for e in examples:
        intent, _, t = parse_target(e.label)
        tags.update(t)
        if intent:
            intents.add(intent)
    return tuple(sorted(tags)) + tuple(sorted(intents))


def make_seq2seq_splits(cfg: DataConfig, seed: int):  # -> tuple[Splits, GoldVault]
    from .data import GoldVault, Splits

    train = read_split(cfg.train, cfg, "train")
    test = read_split(cfg.test, cfg, "test")
    dev_file = read_split(cfg.dev, cfg, "dev") if cfg.dev else None
    if len({e.id for e in train}) != len(train):
        raise DataError(f"{cfg.train}: example ids are not unique")
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
