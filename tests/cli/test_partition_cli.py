"""End-to-end tests of the `partition` and `planted` sub-commands."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save_file
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons import planted_game
from hedonic_neurons.cli import main


def test_partition_command_on_a_saved_matrix(tmp_path, capsys):
    phi, truth = planted_game(150, noise=0.1, random_state=0, dtype=np.float32)
    path = tmp_path / "layer.safetensors"
    save_file({"phi_pas": phi, "other": np.zeros(3, dtype=np.float32)}, str(path))
    out = tmp_path / "part.json"
    assert main(["partition", str(path), "--key", "phi_pas", "--m", "20000", "--omega", "2000",
                 "--out", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert adjusted_rand_score(truth, data["labels"]) > 0.95
    assert data["stability"]["n_samples"] > 0 and "threshold_rule" in data["params"]
    assert "coalitions of 150 players" in capsys.readouterr().out


def test_partition_command_errors(tmp_path, capsys):
    assert main(["partition", str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((3, 3)))
    assert main(["partition", str(bad)]) == 2
    assert "diagonal" in capsys.readouterr().err


def test_planted_command(capsys):
    assert main(["planted", "--n", "200", "--noise", "0.1", "--m", "20000", "--omega", "2000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "adjusted Rand index" in out and "stability certificate" in out


def test_partition_several_layers_in_parallel(tmp_path):
    """Per-layer parallelism: two layers' phi in two worker processes give the serial results."""
    paths = []
    for layer, seed in ((3, 0), (4, 1)):
        phi, _ = planted_game(120, noise=0.1, random_state=seed, dtype=np.float32)
        paths.append(tmp_path / f"layer{layer}.safetensors")
        save_file({"phi": phi}, str(paths[-1]))
    common = ["--m", "20000", "--omega", "2000", "--quiet"]
    assert main(["partition", *map(str, paths), "--jobs", "2", "--out", str(tmp_path / "par"), *common]) == 0
    for p in paths:
        assert main(["partition", str(p), "--out", str(tmp_path / f"{p.stem}.json"), *common]) == 0
        par = json.loads((tmp_path / "par" / f"{p.stem}.json").read_text())
        assert par["labels"] == json.loads((tmp_path / f"{p.stem}.json").read_text())["labels"]
    assert main(["partition", *map(str, paths), "--out", str(tmp_path / "x.json"), *common]) == 2
