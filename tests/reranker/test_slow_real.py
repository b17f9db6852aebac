"""Real-model runs (embedded MiniLM and SmolLM2 on the embedded IR pool): `pytest -m slow tests/reranker`."""

import json
import os
from pathlib import Path

import pytest

from hedonic_neurons.experiments.reranker import RerankerConfig, run_reranker
from hedonic_neurons.partition import SolverConfig

DATA = Path(os.environ.get("HEDONIC_NEURONS_DATA", "data"))
needs_data = pytest.mark.skipif(not (DATA / "ir" / "manifest.json").is_file(),
                                reason="run `hedonic-neurons fetch ir` first")


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("model,layers", [("minilm", (1, 2, 3, 4)), ("smollm2", (7, 8))])
def test_real_model_small_run(tmp_path, model, layers):
    cfg = RerankerConfig(model=model, task="cqtr", layers=layers, seeds=2, n_train=400, n_probe=100, n_ood=60,
                         solver=SolverConfig(m=20_000, omega=2_000), n_largest=2, n_random=2, report=False, track=False)
    rd = run_reranker(cfg, tmp_path / "run", quiet=True)
    ft = json.loads((rd.root / "finetune.json").read_text())
    assert ft["ood_after"]["mse"] < ft["ood_before"]["mse"]  # fine-tuned beats untuned on OOD
    assert (rd.root / "tables" / "table1_extrinsic.md").is_file()
