"""Per-layer parallelism (docs/scale.md): `jobs=2` runs the partition stages of all layers and seeds in worker
processes and writes the same partitions, tables and markers as `jobs=1`, apart from timing fields."""

from __future__ import annotations

import json
import shutil

from hedonic_neurons.experiments.reranker import run_reranker

TIMING = ("seconds",)
TIMED = ("runtime.json", "timings.json", "tables/timings.csv", "tables/timings.md", "summary.md")


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _files(root):
    return {str(p.relative_to(root)): (_untimed(json.loads(p.read_text())) if p.suffix in (".json", ".done")
                                       else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and str(p.relative_to(root)) not in TIMED}


def test_jobs_2_partitions_as_jobs_1(pool, tmp_path, make_model, make_config):
    cfg = make_config(pool, model="llama", seeds=2, layers=(1, 2))
    one = tmp_path / "one"
    run_reranker(cfg, one, quiet=True, model_loader=lambda: make_model("llama"))
    # the same run resumed after fine-tuning and valuations: partitions (4 stages), evaluate and tables again,
    # the partitions on 2 worker processes
    two = tmp_path / "two"
    shutil.copytree(one, two)
    for p in (two / "stages").glob("*.done"):
        if p.stem.startswith(("partitions:", "evaluate:", "tables")):
            p.unlink()
    shutil.rmtree(two / "partitions")
    run_reranker(cfg, two, quiet=True, model_loader=lambda: make_model("llama"), jobs=2)
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b)
    assert sum(k.startswith("stages/partitions:") for k in a) == 4 and "partitions/2/hedonic_pas.s1.b.json" in a
    assert [k for k in a if a[k] != b[k]] == []
    assert json.loads((two / "runtime.json").read_text())[-1]["jobs"] == 2
    assert "jobs" not in json.loads((two / "config.json").read_text())
