"""Fixtures shared across test folders, and the set-up for running the suite on several pytest-xdist
workers (`make test` runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`).

Under xdist each worker is its own process with its own session: session fixtures are built once per
worker, `tmp_path_factory` gives each worker its own base directory, and the torch / BLAS thread pools are
cut to one thread per worker so that two workers do not oversubscribe two cores. Tests that check thread
counts run the CLI in child processes with an explicit `--threads`, which sets torch's count itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def pytest_configure(config: pytest.Config) -> None:
    if XDIST_WORKER:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(1)
        threadpool_limits(1)  # numpy/scipy BLAS and OpenMP (k-means) of this worker
        # child processes (CLI runs, the faults' forkserver, torchrun) start from one OpenMP thread too unless
        # told otherwise; a child given `--threads N` still sets torch's count to N itself
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest tests first (`@pytest.mark.heavy(seconds)`), the rest in their usual order: with
    `--dist loadfile --no-loadscope-reorder` the workers take files in the order of their first test, so
    the long runs start at once and the many short files fill in beside them instead of leaving one worker
    with a long tail. (Not `--dist loadgroup`: xdist 3.8 marks groups by renaming `item._nodeid`, which
    pytest 9 no longer reads, so groups are silently ignored.)"""
    def weight(item: pytest.Item) -> float:
        mark = item.get_closest_marker("heavy")
        return float(mark.args[0]) if mark and mark.args else 0.0

    items.sort(key=lambda it: -weight(it))  # stable: equal weights keep collection order


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------

def write_digits_npz(path: Path) -> Path:
    """Real (sklearn 8x8) digits scaled to 28x28 in MNIST's npz layout, so a test needs no download."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    imgs = np.stack([ndimage.zoom(x.reshape(8, 8) / 16.0, 3.0, order=1) for x in X])  # 24x24
    imgs = np.pad(imgs, ((0, 0), (2, 2), (2, 2)))
    np.savez(path, images=np.clip(np.round(imgs * 255), 0, 255).astype(np.uint8), labels=y.astype(np.uint8))
    return path


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    """The sklearn digits as an MNIST npz (once per session, or per xdist worker); tests only read it."""
    return write_digits_npz(tmp_path_factory.mktemp("digits") / "digits.npz")


# ---------------------------------------------------------------------------------------------------
# ranks of a torch.distributed group, forked from the test process
# ---------------------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port free now (the OS picks it), so concurrent xdist workers do not share a gloo store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForkedRanks:
    """Runs fn(rank) on `world` ranks forked from the test process (model and monkeypatches inherited, no
    interpreter imports torch again); each joins its gloo group through the environment variables torchrun
    sets. A rank's traceback goes to errdir/error<rank>.txt; it exits 0, or 1 after an exception."""

    def __init__(self, errdir: Path):
        self.errdir = errdir

    @staticmethod
    def env(rank: int, world: int, port: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank), HEDONIC_NEURONS_DIST_TIMEOUT="60",
                          HEDONIC_NEURONS_DIST_WAIT_TIMEOUT="120")

    def run(self, fn: Callable[[int], None], world: int = 2, timeout: float = 240) -> list[int | None]:
        """Exit codes of the ranks (None: still running at the timeout, then killed)."""
        port = free_port()
        errdir = self.errdir

        def target(rank: int) -> None:
            try:
                ForkedRanks.env(rank, world, port)
                import torch
                from threadpoolctl import threadpool_limits

                torch.set_num_threads(1)
                # a forked child must not enter an OpenMP pool its parent created (an earlier test ran
                # k-means): libgomp's pool does not survive fork and the child would hang; one thread needs none
                threadpool_limits(1)
                fn(rank)
                os._exit(0)
            except BaseException:  # noqa: BLE001 -- report to the parent, then die with a non-zero status
                (errdir / f"error{rank}.txt").write_text(traceback.format_exc())
                os._exit(1)

        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=target, args=(r,)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        return [p.exitcode for p in procs]

    def errors(self) -> list[str]:
        return [f.read_text() for f in sorted(self.errdir.glob("error*.txt"))]


@pytest.fixture
def forked_ranks(tmp_path) -> ForkedRanks:
    """A ForkedRanks writing tracebacks into this test's tmp_path."""
    return ForkedRanks(tmp_path)


# ---------------------------------------------------------------------------------------------------
# browser tests: Debian's chromium driven by playwright
# ---------------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium():
    """`open_page(path)` -> (page, console errors, requested URLs) in one headless Chromium per test; skipped
    where Debian's chromium (`make browser`) or python playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (`make browser` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        def open_page(path, width: int = 1400, height: int = 1000):
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            return page, errors, requests

        yield open_page
        browser.close()
