"""`study` on the embedded SmolLM2-135M (real weights, real English): `pytest -m slow tests/study`. The full-size
run (512 texts, 4 layers, timed) is `python benchmarks/bench_study.py`."""

import json
import os
from pathlib import Path

import pytest

from hedonic_neurons.experiments.study import study

DATA = Path(os.environ.get("HEDONIC_NEURONS_DATA", "data"))


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not (DATA / "ir" / "manifest.json").is_file(), reason="run `hedonic-neurons fetch ir` first")
def test_smollm2_study_ends_with_an_explorer(tmp_path, chromium):
    from hedonic_neurons.ir.embedded import passage_texts

    texts = [" ".join(t.split()[:40]) for t in passage_texts(None)][:48]
    s = study("smollm2", texts, layers="10-11", out=tmp_path / "run", quiet=True, max_samples=512, max_length=48)
    assert s.target["kind"] == "next-token" and "tied" in s.target["readout"]
    assert {r["method"] for r in s.heldout} >= {"Hedonic-PAS", "Leiden"}
    cards = json.loads((s.rd.root / "cards.json").read_text())["cards"]
    assert cards and all(c["promoted"] for c in cards[:5])
    page, errors, requests = chromium(s.rd.root / "report.html")
    assert page.locator("#cards-explorer div.card").count() == min(len(cards), 60)
    assert not errors
