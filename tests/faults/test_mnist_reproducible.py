"""The same MNIST command gives the same results: with 1 and with 2 torch threads, and when the run is
SIGKILLed at seeded points and resumed each time (issue 15, "The same command gives the same tables" and
"Faults"). Black-box: the CLI in child processes, results compared file by file on disk."""

import json
import time

import pytest

# heavy: scheduled first (tests/conftest.py); --dist loadfile keeps both tests, which share the reference run,
# on one worker
pytestmark = pytest.mark.heavy(150)

N_KILLS = 5  # with the reranker's 5: 10 kill points per make test (issue 15 asks for >= 10)
KILL_SEED = 15


def _argv(out, data, threads):
    # one trained network, two layers: every kind of stage (model, valuations, partitions, metrics, tables,
    # tracking, report) at the smallest size that keeps make test short; the controls run the same stages
    return ["mnist", "--seeds", "1", "--layers", "2-3", "--control-layer", "3", "--loss-delta-images", "32",
            "--out", str(out), "--data", str(data), "--n-train", "400", "--n-test", "128", "--epochs", "2",
            "--m", "2000", "--omega", "200", "--no-controls", "--threads", str(threads), "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_npz, cli_child):
    out = tmp_path_factory.mktemp("mnist") / "reference"
    t0 = time.time()
    assert cli_child(_argv(out, digits_npz, 1)) == 0
    return out, time.time() - t0


def test_threads_do_not_change_results(reference, digits_npz, tmp_path, cli_child, compare_runs):
    ref, _ = reference
    out = tmp_path / "two_threads"
    assert cli_child(_argv(out, digits_npz, 2)) == 0
    assert compare_runs(ref, out) == []
    # the thread count is recorded with the run, but is not part of its configuration or results
    runs = json.loads((out / "runtime.json").read_text())
    assert runs[-1]["threads"] == 2 and "threads" not in json.loads((out / "config.json").read_text())


def test_killed_and_resumed_gives_identical_results(reference, digits_npz, tmp_path, run_with_kills, compare_runs,
                                                    count_files):
    ref, seconds = reference
    out = tmp_path / "killed"
    t0 = time.time()
    log = run_with_kills(_argv(out, digits_npz, 1), out, n_kills=N_KILLS, seed=KILL_SEED,
                         total_files=count_files(ref))
    killed = [r for r in log if r["killed"]]
    print(f"\nMNIST fault injection: {len(killed)} SIGKILLs survived of {len(log)} tried "
          f"(reference run {seconds:.1f} s, killed-and-resumed {time.time() - t0:.1f} s); kills: {log}")
    assert len(killed) >= 4
    # spread over the run: kills landed with few and with many stages done
    stages = sorted(r["stages"] for r in killed)
    assert len(set(stages)) >= 3 and stages[-1] - stages[0] >= 4, stages
    assert compare_runs(ref, out) == []
