"""report.html from full and partial run directories, track_run outputs, the CLI, plots and Markdown."""

import json
import re

import numpy as np
import pytest

from hedonic_neurons.cli import main
from hedonic_neurons.report import build_report
from hedonic_neurons.report.markdown import markdown_to_html
from hedonic_neurons.report.plots import parse_ci, phi_heatmap_png, zipf_fit
from hedonic_neurons.report.sankey import sankey_data, track_and_draw
from hedonic_neurons.rundir import RunDir, read_table
from hedonic_neurons.tracking import track_layers


def test_track_run_writes_tables_views_and_figures(small_run):
    rd, labels = small_run
    out = track_and_draw(rd.root)
    assert set(out) == {"hedonic_pas", "random"}
    rows = read_table(rd.root / "tracking" / "transitions.csv")
    # lone players are in no coalition and not tracked
    n_source = sum(int((np.unique(labels[layer], return_counts=True)[1] >= 2).sum()) for layer in (1, 2))
    assert len(rows) == 2 * n_source
    table = read_table(rd.root / "tables" / "tracking_events.csv")
    assert {r["method"] for r in table} == {"hedonic_pas", "random"} and len(table) == 12
    # each method beside its two controls, one row per transition
    assert sorted({r["kind"] for r in table}) == ["method", "random_partition", "shuffled_weights"]
    table = [r for r in table if r["kind"] == "method"]
    for r in table:
        assert sum(float(r[f"{e}_%"]) for e in ("persist", "merge", "split", "vanish")) == pytest.approx(100, abs=0.2)
    # planted flow (coalition c writes the dims coalition c of the next layer reads) is mostly persist;
    # a random relabelling of the same sizes destroys it
    pas = {r["transition"]: float(r["persist_%"]) for r in table if r["method"] == "hedonic_pas"}
    rnd = {r["transition"]: float(r["persist_%"]) for r in table if r["method"] == "random"}
    assert min(pas.values()) > 50 and max(rnd.values()) < 20
    # the views' captions carry the controls' event shares
    fig = json.loads((rd.root / "views" / "sankey_hedonic_pas_all.json").read_text())
    assert "control: size-matched random partition" in fig["layout"]["title"]["text"]
    for name in ("sankey_hedonic_pas_1_to_2", "sankey_hedonic_pas_2_to_3", "sankey_hedonic_pas_all"):
        assert (rd.root / "views" / f"{name}.html").exists()
        fig = json.loads((rd.root / "views" / f"{name}.json").read_text())
        assert fig["data"][0]["type"] == "sankey"
    assert (rd.root / "views" / "plotly.min.js").exists()   # the standalone views work offline too
    assert (rd.root / "figures" / "sankey_hedonic_pas_all.png").stat().st_size > 5000
    # the mass matrices are saved; what tracking returned re-tracks to the same rows
    from safetensors.numpy import load_file

    from hedonic_neurons.tracking.events import mass_matrix
    from hedonic_neurons.tracking.run import track_methods

    tracked = track_methods(rd.root, ["hedonic_pas"])["hedonic_pas"]
    saved = load_file(str(rd.root / "tracking" / "mass_hedonic_pas.safetensors"))
    for (a, b), m in tracked.masses.items():
        np.testing.assert_allclose(saved[f"{a}->{b}"], mass_matrix(m))
    lab = tracked.labels   # the labels tracked: lone players already marked as in no coalition
    again = track_layers(lab, tracked.masses)
    assert [r["event"] for r in again] == [r["event"] for r in out["hedonic_pas"]]


def test_sankey_links_respect_lo(small_run):
    rd, labels = small_run
    from hedonic_neurons.tracking.run import track_methods

    tracked = track_methods(rd.root, ["hedonic_pas"])["hedonic_pas"]
    out = {"hedonic_pas": tracked.rows}
    mass = tracked.masses
    lab = tracked.labels   # the labels tracked: lone players already marked as in no coalition
    for lo in (0.1, 0.3):
        data = sankey_data(lab, mass, out["hedonic_pas"], lo=lo)
        coalition_links = [lk for lk in data["links"] if data["nodes"][lk["target"]]["coalition"] >= 0]
        assert coalition_links and all(lk["share"] >= lo for lk in coalition_links)
        vanish_sources = {r["source"] for r in out["hedonic_pas"] if r["event"] == "vanish"}
        if vanish_sources:
            assert any(data["nodes"][lk["target"]]["coalition"] < 0 for lk in data["links"])


def test_full_report_is_self_contained(small_run):
    rd, _ = small_run
    path = build_report(rd.root)
    assert path == rd.root / "report.html"
    page = path.read_text()
    for section in ("Summary", "Configuration", "Partitions", "Tables", "Tracking across layers", "Figures"):
        assert f">{section}</h2>" in page
    assert ">MISSING</span>" not in page and page.count(">present</span>") == 7
    # results first (headline figures), bookkeeping folded at the end
    order = re.findall(r'<section id="([a-z]+)">', page)
    assert order[0] == "results" and order[-1] == "contents", order
    assert order.index("config") > order.index("figures") and order.index("partitions") > order.index("tables")
    assert "synergy_bars" in page.split('<section id="summary">')[0]
    # offline: no remote scripts, styles or images; every image inline
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # the inlined libraries hold URLs
    assert not re.search(r'(src|href)="(https?:)?//', markup)
    assert page.count('src="data:image/png;base64,') >= 8
    assert "Plotly.newPlot" in page and page.count('class="view plotly-view"') == 6
    # every table of tables/ appears with its rows
    for name in ("synergy", "tracking_events", "coalition_sizes", "stability_certificates", "accuracy"):
        assert f'id="table-{name}"' in page
    assert "0.97" in page and "hedonic_pas" in page
    assert "<strong>test</strong>" in page  # summary.md rendered
    # derived figures lie beside the report for papers
    for fig in ("coalition_sizes_hedonic_pas", "phi_2_hedonic_pas", "stability_certificates", "synergy_bars"):
        assert (rd.root / "figures" / f"{fig}.png").exists()


def test_partial_run_dir_says_what_is_missing(tmp_path):
    rd = RunDir(tmp_path / "partial")
    rd.save_config({"experiment": "mnist", "seed": 1})
    page = build_report(rd.root).read_text()
    assert ">Configuration</h2>" in page and "mnist" in page
    assert page.count(">MISSING</span>") == 6  # summary, partitions, tables, tracking, figures, views
    assert "Plotly" not in page  # no view: the 4.8 MB library is left out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nowhere")


def test_foreign_view_is_embedded_offline(tmp_path):
    import plotly.graph_objects as go

    rd = RunDir(tmp_path / "run")
    go.Figure(go.Bar(x=[1, 2], y=[3, 4])).write_html(str(rd.view_path("bars")), include_plotlyjs="cdn")
    page = build_report(rd.root).read_text()
    assert "srcdoc=" in page and "src=&quot;https://cdn.plot.ly" not in page
    assert "Plotly.newPlot" in page  # the figure's own call survives, with the inline library


def test_cli_report(small_run, capsys):
    rd, _ = small_run
    assert main(["--quiet", "report", str(rd.root), "--hi", "0.8"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert "hi = 0.8" in (rd.root / "tables" / "tracking_events.md").read_text()
    assert main(["--quiet", "report", str(rd.root / "missing")]) == 2


def test_zipf_fit_recovers_exponent():
    ranks = np.arange(1, 200)
    fit = zipf_fit(1000.0 * ranks ** -1.3)
    assert fit["exponent"] == pytest.approx(1.3) and fit["A"] == pytest.approx(1000) and fit["r2"] > 0.999
    with pytest.raises(ValueError, match="at least 2"):
        zipf_fit([5])


def test_phi_heatmap_checks_shape(tmp_path):
    with pytest.raises(ValueError, match="len\\(labels\\)"):
        phi_heatmap_png(np.zeros((3, 3)), np.array([0, 1]), tmp_path / "x.png")
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(2000, 2000))
    np.fill_diagonal(phi, 0)
    p = phi_heatmap_png(phi, rng.integers(0, 300, 2000), tmp_path / "big.png", max_pixels=256)
    assert p.stat().st_size > 1000


def test_parse_ci_and_markdown():
    assert parse_ci("0.12 ± 0.01") == (0.12, 0.01)
    assert parse_ci("-1.5e-3 ± 2e-4") == (-0.0015, 0.0002)
    assert parse_ci(3) == (3.0, 0.0) and parse_ci("hedonic") is None
    html = markdown_to_html("# T\n\nsome *it* and **bold** `x<y`\n\n1. a\n2. b\n\n```\n<raw>\n```\n"
                            "[l](http://x) <script>")
    assert "<h2>T</h2>" in html and "<em>it</em>" in html and "<code>x&lt;y</code>" in html
    assert "<ol><li>a</li><li>b</li></ol>" in html and "&lt;raw&gt;" in html and "&lt;script&gt;" in html


def test_phi_heatmaps_from_declared_keys(tmp_path):
    from hedonic_neurons.report.html import derive_outputs

    rd = RunDir(tmp_path / "run")
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(20, 20))
    np.fill_diagonal(phi, 0)
    for m in ("hedonic_oca", "hedonic_pas", "random"):
        rd.save_partition("h2", m, rng.integers(0, 5, 20))
    rd.save_matrices("h2", {"phi_oca": phi, "oca_se": np.abs(phi), "phi_pas": phi, "psi": phi[0]})
    assert derive_outputs(rd.root) == []
    assert sorted(p.name for p in (rd.root / "figures").glob("phi_*")) == [
        "phi_h2_hedonic_oca.png", "phi_h2_hedonic_pas.png"]


def test_self_verification_section(tmp_path):
    from hedonic_neurons.models.verify import save_verification

    rd = RunDir(tmp_path / "run")
    res = {"tolerance": 1e-3, "checks": {"pas_per_sample": {"what": "Delta_ij(x) per sample", "max_rel_err": 2e-6,
                                                            "n_values": 9, "passed": True}}}
    save_verification(res, rd.root / "verification", stem="10")
    page = build_report(rd.root).read_text()
    assert "Self-verification" in page and "pas_per_sample" in page and "2e-06" in page


def test_paper_columns_are_reference_marks_not_bars(tmp_path):
    """Table 6 (reranker) names its paper columns 'paper Pairwise (LLaMA)': they are matched to our metric and
    drawn as reference marks, never as a metric panel of their own; the labelled '± ... (sd)' cells parse."""
    from hedonic_neurons.report.plots import _paper_column, bar_metrics, synergy_bars_png

    rows = [{"task": "CQTR", "algorithm": m, "Pairwise (held-out)": f"{v:.3g} ± 1e-06",
             "Ratio (held-out)": "0.25 (1 seed, no CI)", "paper Pairwise (LLaMA)": p, "paper Ratio (LLaMA)": "1.7"}
            for m, v, p in (("Random", 1e-6, "0.002"), ("Hedonic (PAS)", 5e-6, "0.031"))]
    assert bar_metrics(rows, "algorithm", "task") == ["Pairwise (held-out)", "Ratio (held-out)"]
    assert _paper_column("Pairwise (held-out)", list(rows[0])) == "paper Pairwise (LLaMA)"
    assert _paper_column("Ratio (held-out)", list(rows[0])) == "paper Ratio (LLaMA)"
    assert _paper_column("dAcc_pp", ["dAcc_pp", "paper_dAcc"]) == "paper_dAcc"
    assert parse_ci("1.49 ± 0.23 (sd)") == (1.49, 0.23) and parse_ci("0.25 (1 seed, no CI)") == (0.25, 0.0)
    assert synergy_bars_png(rows, tmp_path / "t6.png", method_col="algorithm", group_col="task").stat().st_size > 0


def test_cli_report_keeps_the_papers_rule_and_prints_the_controls(small_run, capsys):
    rd, _ = small_run
    assert main(["--quiet", "report", str(rd.root), "--measure", "raw", "--no-derive"]) == 0
    out = capsys.readouterr().out
    assert "Tracking controls (measure = raw" in out and "random_partition" in out
    assert "measure = raw" in (rd.root / "tables" / "tracking_events.md").read_text()
    assert main(["--quiet", "report", str(rd.root), "--floor", "0.3", "--chance-draws", "0", "--no-derive"]) == 0
    assert "floor = 0.3" in (rd.root / "tables" / "tracking_events.md").read_text()
