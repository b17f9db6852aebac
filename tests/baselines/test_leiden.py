"""LeidenPartition: the size cap holds (DESIGN trap 8), planted games are recovered, missing leidenalg is named."""

import builtins

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons.baselines import LeidenPartition
from hedonic_neurons.game import planted_game


def _block(n=60, block=30, seed=0):
    rng = np.random.default_rng(seed)
    phi = rng.normal(0, 0.05, (n, n))
    phi = (phi + phi.T) / 2
    phi[:block, :block] += 1.0
    np.fill_diagonal(phi, 0)
    return phi


def test_max_size_is_enforced_where_unconstrained_leiden_exceeds_it():
    phi = _block()
    free = LeidenPartition(max_size=60, resolution=0.2).fit(phi)
    assert np.bincount(free.labels_).max() == 30  # the block is one community without the cap
    capped = LeidenPartition(max_size=10, resolution=0.2).fit(phi)
    sizes = np.bincount(capped.labels_)
    assert sizes.max() <= 10
    assert (sizes == 10).sum() == 3  # the block is cut into three full communities, not dissolved
    assert np.unique(capped.labels_[:30]).size == 3
    assert capped.n_coalitions_ == sizes.size
    assert "<= 10" in capped.resolution_rule_


def test_recovers_planted_game_and_is_deterministic():
    phi, truth = planted_game(400, noise=0.1, random_state=1)
    a = LeidenPartition(random_state=0).fit(phi)
    assert adjusted_rand_score(truth, a.labels_) > 0.98
    assert 0 < a.resolution_ < 1
    assert "90%" in a.resolution_rule_
    b = LeidenPartition(random_state=0).fit(phi)
    assert np.array_equal(a.labels_, b.labels_)
    sizes = np.bincount(a.labels_)
    assert np.all(np.diff(sizes) <= 0)  # largest first


def test_missing_leidenalg_names_the_install(monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "leidenalg":
            raise ImportError("No module named 'leidenalg'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install leidenalg") as err:
        LeidenPartition().fit(_block())
    assert "\n" not in str(err.value)


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        LeidenPartition().fit(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="resolution"):
        LeidenPartition(resolution="high").fit(_block())
