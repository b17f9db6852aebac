"""End to end: `hedonic-neurons mnist` on a small subset writes every table, figure and the summary, and resumes."""

import csv
import json

import numpy as np
import pytest

from hedonic_neurons.cli import main


def _table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.heavy(65)
def test_cli_end_to_end(tmp_path, digits_npz, capsys, monkeypatch):
    out = tmp_path / "run"
    # 2 seeds x (trained, random-init and label-shuffled controls) = 6 networks, one layer: every table has
    # CIs over seeds; sizes are the smallest that keep every column finite and non-constant
    argv = ["mnist", "--seeds", "2", "--layers", "4", "--control-layer", "4", "--control-seeds", "2",
            "--loss-delta-images", "32",
            "--out", str(out), "--data", str(digits_npz),
            "--n-train", "400", "--n-test", "128", "--epochs", "2", "--m", "2000", "--omega", "200", "--threads", "1",
            "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "report" in printed.strip().splitlines()[-1]
    for name in ("table7_synergy", "table8_interpretability", "table9_controls", "per_layer", "stability",
                 "accuracy"):
        assert (out / "tables" / f"{name}.csv").exists() and (out / "tables" / f"{name}.md").exists(), name
    for name in ("table7_synergy", "table8_interpretability", "table9_controls"):
        rows = _table(out / "tables" / f"{name}.csv")
        assert rows
        for col in rows[0]:
            vals = [r[col] for r in rows]
            assert not any(v.lower() in ("nan", "n/a", "") or "nan" in v.lower() for v in vals), (name, col)
            if col not in ("method", "setting"):
                assert len(set(vals)) > 1 or len(rows) == 1, f"{name}.{col} is constant"
    assert len(_table(out / "tables" / "table9_controls.csv")) == 7  # the paper's 4 rows + Leiden per setting
    assert len(list((out / "figures").glob("grid_h4_hedonic_pas_*.png"))) >= 1
    summary = (out / "summary.md").read_text()
    assert "Hedonic-PAS" in summary and "held" in summary
    coalitions = json.loads((out / "coalitions.json").read_text())
    methods = {r["method"] for r in coalitions}
    assert methods == {"random", "kmeans", "ward", "leiden", "hedonic_oca", "hedonic_pas"}
    # every method partitions all 256 neurons of each layer, on each half
    for key in ("seed0_h4", "seed1_h4", "shuffled1_h4"):
        for m in methods:
            for stem in (m, f"{m}.b"):
                p = json.loads((out / "partitions" / key / f"{stem}.json").read_text())
                assert sorted(sum(p["coalitions"], [])) == list(range(256))
        leiden = json.loads((out / "partitions" / key / "leiden.json").read_text())
        assert max(len(c) for c in leiden["coalitions"]) <= 10
    _check_crossfit(out, coalitions)
    assert (out / "models" / "seed0.safetensors").exists()
    # resuming recomputes nothing and reproduces the tables
    before = (out / "tables" / "table7_synergy.csv").read_text()
    stamp = (out / "metrics" / "seed0_h4.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "tables" / "table7_synergy.csv").read_text() == before
    assert (out / "metrics" / "seed0_h4.json").stat().st_mtime_ns == stamp
    # a report that cannot be written: the run exits non-zero with one line, and the run says so
    import hedonic_neurons.report

    def broken_report(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hedonic_neurons.report, "build_report", broken_report)
    (out / "stages" / "report.done").unlink()  # the report stage is due again
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hedonic-neurons mnist: error: building report.html failed") and "\n" not in err
    assert "re-run the same command" in err
    assert "building report.html failed" in (out / "warnings.txt").read_text()
    assert "## Warnings" in (out / "summary.md").read_text()


def _cell_mean(cell: str) -> float:
    return float(cell.split("±")[0])


def _check_crossfit(out, coalitions):
    """The reported Pair of a partition is its Pair on the OTHER half's PAS; the ARI column is the ARI of the
    two halves' partitions."""
    from safetensors.numpy import load_file
    from sklearn.metrics import adjusted_rand_score

    from hedonic_neurons.metrics.synergy import pair_synergy, ratio_synergy

    mats = load_file(str(out / "matrices" / "seed0_h4.safetensors"))
    a, b = mats["half_a_idx"], mats["half_b_idx"]
    assert a.size == b.size == 64 and np.intersect1d(a, b).size == 0  # disjoint halves of the 128 digits
    assert not np.allclose(mats["phi_pas_a"], mats["phi_pas_b"])
    checked = 0
    for r in coalitions:
        if r["variant"] != "seed0" or r["size"] < 2:
            continue
        fit, other = r["half"], {"a": "b", "b": "a"}[r["half"]]
        assert r["scored_on"] == other
        assert r["pair"] == pytest.approx(pair_synergy(mats[f"phi_pas_{other}"], r["members"]), rel=1e-9, abs=0)
        assert r["ratio"] == pytest.approx(ratio_synergy(mats[f"phi_pas_{other}"], mats[f"psi_{other}"],
                                                         r["members"]), rel=1e-9, abs=0, nan_ok=True)
        assert r["pair_in_sample"] == pytest.approx(pair_synergy(mats[f"phi_pas_{fit}"], r["members"]), rel=1e-9,
                                                    abs=0)
        checked += 1
    assert checked >= 5
    # the ARI column: mean over the 2 seeds of ARI(half-a partition, half-b partition)
    t7 = {r["method"]: r for r in _table(out / "tables" / "table7_synergy.csv")}
    for m, name in (("hedonic_pas", "Hedonic-PAS"), ("leiden", "Leiden (CPM)"), ("random", "Random Partition")):
        aris = []
        for s in (0, 1):
            la = json.loads((out / "partitions" / f"seed{s}_h4" / f"{m}.json").read_text())["labels"]
            lb = json.loads((out / "partitions" / f"seed{s}_h4" / f"{m}.b.json").read_text())["labels"]
            aris.append(adjusted_rand_score(la, lb))
        assert _cell_mean(t7[name]["ARI_split_half"]) == pytest.approx(np.mean(aris), abs=6e-4)
    assert "ARI" in (out / "summary.md").read_text() and "Leiden" in (out / "summary.md").read_text()


def test_cli_rejects_bad_input(tmp_path, digits_npz, capsys):
    assert main(["mnist", "--layers", "9", "--out", str(tmp_path / "x"), "--data", str(digits_npz)]) == 2
    assert "within 1-5" in capsys.readouterr().err
    assert main(["mnist", "--out", str(tmp_path / "y"), "--data", str(tmp_path / "none.npz")]) == 2
    assert "fetch mnist" in capsys.readouterr().err
    # too few held-out digits to split in two: one line naming the minimum, nothing written
    assert main(["mnist", "--out", str(tmp_path / "z"), "--data", str(digits_npz), "--n-test", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert "each half needs >= 32" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "z").exists()
