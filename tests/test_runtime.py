"""runtime.py: one entry per invocation in RUN/runtime.json, for both experiments."""

import json

from hedonic_neurons.rundir import RunDir
from hedonic_neurons.runtime import available_cores, pick_threads, record_runtime


def test_record_runtime_appends_one_entry_per_invocation(tmp_path):
    rd = RunDir(tmp_path / "run")
    (rd.root / "runtime.json").write_text(json.dumps({"jobs": 2, "world_size": 1}))  # an older reranker's dict
    record_runtime(rd, 1, jobs=3, world_size=2)
    record_runtime(rd, 2)
    runs = json.loads((rd.root / "runtime.json").read_text())
    assert [r["jobs"] for r in runs] == [2, 3, 1]
    assert runs[1]["threads"] == 1 and runs[1]["world_size"] == 2 and runs[2]["threads"] == 2
    assert "world_size" not in runs[2] and "torch" in runs[2]


def test_pick_threads_takes_what_is_asked_else_every_core(monkeypatch):
    assert pick_threads(3) == 3
    assert pick_threads(-2) == 1
    # the results do not depend on the thread count, so a busy machine no longer drops the default to 1
    monkeypatch.setattr("os.getloadavg", lambda: (64.0, 64.0, 64.0), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert pick_threads(None) == available_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. one per pytest-xdist worker (tests/conftest.py)
    assert pick_threads(None) == 1 and pick_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert pick_threads(None) == available_cores()
