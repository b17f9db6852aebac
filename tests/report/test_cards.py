"""Coalition cards from a small real pipeline: their fields, the JSON round trip, tracking partners, the escaping
of the explorer's HTML, and the report section."""

import json

import numpy as np
import pytest

from hedonic_neurons.report.cards import (
    build_cards,
    cards_section_html,
    member_weights,
    read_cards,
    write_cards,
)
from hedonic_neurons.report.html import build_report
from hedonic_neurons.rundir import read_table

# the shared fixture (cards_run, conftest.py) valuates and partitions a tiny LLaMA on three layers: ~15 s on two
# busy cores, most of it importing transformers' LLaMA
pytestmark = pytest.mark.heavy(15)


def test_cards_of_a_real_run(cards_run):
    rd, cards, texts = cards_run
    assert len(cards) >= 3
    pairs = [c["pair"] for c in cards]
    assert pairs == sorted(pairs, reverse=True)  # sorted by held-out Pair
    for c in cards:
        labels = rd.load_partition(c["layer"], "hedonic_pas")["labels"]
        assert c["size"] >= 2 and c["members"] == np.flatnonzero(labels == c["coalition"]).tolist()
        assert c["pair_ci"][0] <= c["pair"] <= c["pair_ci"][1]
        assert c["joint_ci"][0] <= c["joint"] <= c["joint_ci"][1]
        assert abs(c["interaction"] - (c["singles_sum"] - c["joint"])) < 1e-9
        assert 0 < c["best_jaccard"] <= 1 and isinstance(c["stable"], bool)
        assert 1 <= len(c["examples"]) <= 5 and len(c["promoted"]) == 10 and len(c["suppressed"]) == 10
        for e in c["examples"]:
            assert len(e["tokens"]) == len(e["acts"]) and max(np.abs(e["acts"])) <= 1.0
            assert all(t in texts[e["text"]].split() for t in e["tokens"])
        assert "input embeddings" in c["direct_note"]
    # partners come from tracking/transitions.csv: every card of layer 0 or 1 has its own row to the next layer
    rows = read_table(rd.root / "tracking" / "transitions.csv")
    assert rows
    for c in cards:
        if c["layer"] in ("0", "1"):
            nxt = c["partners"]["next"]
            assert len(nxt) == 1 and nxt[0]["layer"] == str(int(c["layer"]) + 1)
            row = next(r for r in rows if r["from_layer"] == c["layer"] and int(r["source"]) == c["coalition"])
            assert nxt[0]["event"] == row["event"] and abs(nxt[0]["alpha"] - float(row["alpha"])) < 1e-12
        if c["layer"] == "0":
            assert c["partners"]["prev"] == []
    assert any(c["partners"]["prev"] for c in cards if c["layer"] != "0") or all(
        int(r["target"]) < 0 for r in rows)


def test_json_round_trip_and_markdown(cards_run, tmp_path):
    _, cards, _ = cards_run
    path = write_cards(tmp_path, cards)
    assert path == tmp_path / "cards.json"
    assert read_cards(tmp_path) == cards
    assert json.loads(path.read_text())["n_cards"] == len(cards)
    md = (tmp_path / "cards.md").read_text()
    assert md.count("\n| ") == len(cards) + 1  # header + one row per card
    with pytest.raises(FileNotFoundError, match="write_cards"):
        read_cards(tmp_path / "nothing")


def test_build_cards_checks_and_nan(tmp_path):
    labels = np.array([0, 0, 1, 2, 2, 2])
    effects = [{"members": [0, 1], "pair": float("nan"), "pair_ci": [float("nan")] * 2, "joint": 1.0,
                "joint_ci": [0.5, 1.5], "singles_sum": 2.0, "singles_sum_ci": [1.0, 3.0], "interaction": 1.0,
                "interaction_ci": [0.0, 2.0], "n_samples": 4},
               {"members": [3, 4, 5], "pair": 0.2, "pair_ci": [0.1, 0.3], "joint": 1.0, "joint_ci": [0.5, 1.5],
                "singles_sum": 1.0, "singles_sum_ci": [0.5, 1.5], "interaction": 0.0, "interaction_ci": [0, 0],
                "n_samples": 4}]
    cards = build_cards(3, labels, effects, other_labels=np.array([0, 0, 0, 1, 1, 2]))
    assert [c["coalition"] for c in cards] == [2, 0]  # NaN Pair sorts last
    assert cards[1]["pair"] is None and cards[0]["best_jaccard"] == pytest.approx(2 / 3)
    write_cards(tmp_path, cards)
    assert "NaN" not in (tmp_path / "cards.json").read_text()  # strict JSON
    with pytest.raises(ValueError, match="2 coalitions"):
        build_cards(3, labels, effects[:1])
    with pytest.raises(ValueError, match="not coalition"):
        build_cards(3, labels, effects[::-1])


def test_member_weights():
    acts = np.array([[1.0, 0.0, 5.0], [3.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    w = member_weights(acts, [1, 0], top=2)  # coalition mean: 0.5, 2.0, 0.0 -> samples 1 and 0
    assert w.tolist() == [2.0, 0.5]


def test_section_escapes_every_string():
    nasty = ["</script><script>alert(1)</script>", "<!--", "\n", "  ", 'say "hi"', "a&amp;b"]
    card = {"id": "m:1:0", "layer": "1", "method": "m", "coalition": 0, "members": [1, 2], "size": 2,
            "pair": 0.1, "pair_ci": [0.0, 0.2], "examples": [{"text": 0, "peak": 1.0, "peak_pos": 0,
                                                             "tokens": nasty, "acts": [1, 0.5, 0, -0.5, 0, 0]}],
            "promoted": [[t, 1.0] for t in nasty], "suppressed": [], "partners": {"prev": [], "next": []}}
    page = cards_section_html([card])
    data = page.split("id='cards-data'>", 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data  # nothing can end the script element
    assert json.loads(data)[0]["examples"][0]["tokens"] == nasty
    assert page.count("<script") == 2 and "alert(1)</script>" not in page


def test_report_has_a_coalitions_section(cards_run, tmp_path):
    rd, cards, _ = cards_run
    out = build_report(rd.root, out=tmp_path / "report.html")
    page = out.read_text()
    assert '<a href="#coalitions">Coalitions</a>' in page and "id='cards-explorer'" in page

