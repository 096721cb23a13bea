"""Data: read labeled files (:mod:`.readers`), make seeded splits (:mod:`.splits`), and keep the
pool's gold labels apart (:mod:`.vault`, :class:`GoldVault`: reporting only, never given to a
method). The task-family label formats (CoNLL, trees, slots) live in :mod:`llmkd.formats`.
"""

from __future__ import annotations

from .readers import (SEQ2SEQ_FORMATS, check_labels, check_task_data, data_format, label_vocabulary, read_examples,
                      read_split)
from .splits import Splits, full_train, make_seq2seq_splits, make_splits
from .vault import GoldVault

__all__ = ["read_examples", "check_labels", "check_task_data", "data_format", "read_split", "label_vocabulary", "SEQ2SEQ_FORMATS", "Splits",
           "make_splits", "make_seq2seq_splits", "full_train", "GoldVault"]
