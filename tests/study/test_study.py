"""`study` end to end: the planted positive control is found (the pair, its trigger tokens, its target token), the
negative control finds nothing there, every tested architecture ends with a report and cards, runs resume, and the
Python API returns the run's objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hedonic_neurons.experiments.study import Study, StudyConfig, study
from hedonic_neurons.models.planted_lm import PLANTED_PAIR, TARGET_TOKEN, TRIGGERS

pytestmark = pytest.mark.heavy(60)


def _coalition_of(labels, i):
    return sorted(np.flatnonzero(np.asarray(labels) == labels[i]).tolist())


def test_positive_control_pair_is_found(planted_run):
    s = planted_run
    assert s.target["kind"] == "next-token" and s.target["head_is_new"] is False
    for half in ("hedonic_pas", "hedonic_pas.b"):  # fitted on each half of the texts
        labels = s.rd.load_partition("0", half)["labels"]
        assert _coalition_of(labels, PLANTED_PAIR[0]) == list(PLANTED_PAIR)
    top = max((c for c in s.cards if c["layer"] == "0"), key=lambda c: c["pair"])
    assert top["members"] == list(PLANTED_PAIR) and top["best_jaccard"] == 1.0
    assert top["pair_ci"][0] > 0  # held-out synergy, CI above zero
    assert top["promoted"][0][0] == TARGET_TOKEN
    peaks = [ex["tokens"][ex["peak_pos"]] for ex in top["examples"]]
    assert peaks and all(p.strip() in TRIGGERS for p in peaks), peaks
    assert top["stable"] is True


def test_run_directory_and_report(planted_run):
    root = planted_run.rd.root
    for rel in ("config.json", "summary.md", "tables/heldout.csv", "cards.json", "report.html",
                "partitions/0/leiden.json", "partitions/1/hedonic_pas.b.json", "matrices/0.safetensors",
                "valuations/0.json", "verification"):
        assert (root / rel).exists(), rel
    summary = (root / "summary.md").read_text()
    assert "logit of the observed next token" in summary and "layer 0:" in summary and "Nash stable" in summary
    html = (root / "report.html").read_text()
    assert 'id="coalitions"' in html
    assert json.loads((root / "valuations" / "0.json").read_text())["target"]["kind"] == "next-token"
    methods = {r["method"] for r in planted_run.heldout}
    assert {"Hedonic-PAS", "Leiden", "Random", "k-means", "Ward"} <= methods
    cfg = StudyConfig(**json.loads((root / "config.json").read_text()))  # loadable again
    assert cfg.layers == (0, 1) and cfg.texts_digest


def test_resume_reuses_every_stage(planted, planted_run):
    s = Study(StudyConfig(**json.loads((planted_run.rd.root / "config.json").read_text())), planted_run.rd.root,
              quiet=True)
    s.run()
    assert s.sr.ran == []  # nothing recomputed
    assert s.cards and s.heldout


def test_negative_control_finds_no_pair(unplanted, tmp_path):
    s = study(str(unplanted["model"]), str(unplanted["texts"]), layers="0", out=tmp_path / "run", quiet=True,
              max_length=24, cards=False, baselines=False)
    for half in ("hedonic_pas", "hedonic_pas.b"):
        labels = s.rd.load_partition("0", half)["labels"]
        assert labels[PLANTED_PAIR[0]] != labels[PLANTED_PAIR[1]] or len(_coalition_of(labels, 0)) == 1


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma2", "mistral", "bert"])
def test_cli_study_every_architecture(arch, arch_runs):
    rc, out, err = arch_runs[arch]
    assert rc == 0, err
    target = json.loads((out / "valuations" / "1.json").read_text())["target"]
    assert target["kind"] == ("label" if arch == "bert" else "next-token")
    if arch == "gemma2":
        assert target["softcap"] == 5.0
    assert (out / "cards.json").is_file() and 'id="coalitions"' in (out / "report.html").read_text()
    assert {"1", "2"} <= {p.name for p in (out / "partitions").iterdir()}
