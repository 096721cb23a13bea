"""Task-family label formats: read, repair and score helpers, one module per family.

* :mod:`.conll`: token-tagged NER data (CoNLL column files, ``seq.in`` / ``seq.out``), IOB2 tags
  and spans;
* :mod:`.trees`: constituency trees (treebank brackets, linearized targets, repair, bracket F1);
* :mod:`.slots`: slot filling as word/tag sequences (read, repair, slot F1).

Used by the data readers, the tasks and the students; this package imports none of them itself.
"""
