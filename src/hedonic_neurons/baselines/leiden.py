"""Leiden community detection on the positive part of phi, community size capped (as the hedonic
coalitions are, so the two compare).

It stands for "what a user would pick instead" of the hedonic game: leidenalg's CPM
(constant Potts model) on the graph whose edge weights are the positive off-diagonal phi, scaled to
a maximum of 1. CPM with resolution gamma maximises sum over communities of (w_in - gamma x pairs),
which is the potential of an additively separable hedonic game with per-partner cost gamma.

Gotcha (measured with leidenalg 0.12): `Optimiser.max_comm_size` does nothing unless
`Optimiser.community_constraint_enforcement` is also set high (10**6 works; 1 and 10 do not), and
`leidenalg.find_partition(max_comm_size=...)` ignores the cap. The cap is checked after the fit.
"""

from __future__ import annotations

import numpy as np

from hedonic_neurons.game.dynamics import relabel_by_size

_INSTALL = "LeidenPartition needs leidenalg and python-igraph: pip install leidenalg"


def _import_leiden():
    try:
        import igraph
        import leidenalg
    except ImportError as err:  # one line, naming the install
        raise ImportError(_INSTALL) from err
    return igraph, leidenalg


def positive_weights(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, w) for i < j with symmetrised phi_ij > 0, w scaled so that max w = 1."""
    phi = np.asarray(phi, dtype=np.float64)
    sym = (phi + phi.T) / 2
    i, j = np.triu_indices(sym.shape[0], k=1)
    w = sym[i, j]
    keep = w > 0
    i, j, w = i[keep], j[keep], w[keep]
    if w.size:
        w = w / w.max()
    return i, j, w


class LeidenPartition:
    """Leiden (CPM) on the positive part of phi, communities of at most `max_size` players.

    Parameters
    ----------
    max_size: largest community allowed (enforced, and checked after the fit).
    resolution: "auto" (the `quantile` of the positive scaled weights; 0.9 by default) or a float
        CPM resolution on the scaled weights (0 < resolution <= 1 is the useful range).
    quantile: quantile of the positive scaled weights used by resolution="auto".
    n_iterations: Leiden iterations (2, leidenalg's own default; negative: until no move improves the
        partition, which on a dense 1,536-player phi takes minutes with the size cap enforced).
    random_state: seed of leidenalg's random number generator (fixed seed, identical labels).

    Attributes after fit: labels_ (largest community first), resolution_, resolution_rule_,
    n_coalitions_, quality_ (CPM objective on the scaled weights).
    """

    def __init__(self, max_size: int = 10, resolution: str | float = "auto", quantile: float = 0.9,
                 n_iterations: int = 2, random_state: int | None = 0):
        self.max_size = max_size
        self.resolution = resolution
        self.quantile = quantile
        self.n_iterations = n_iterations
        self.random_state = random_state

    def fit(self, phi, y=None) -> LeidenPartition:
        igraph, leidenalg = _import_leiden()
        phi = np.asarray(phi)
        if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] == 0:
            raise ValueError(f"phi must be a non-empty square n x n matrix, got shape {phi.shape}")
        if not np.all(np.isfinite(phi)):
            raise ValueError("phi has non-finite entries (NaN/inf); replace them (np.nan_to_num) before fitting")
        if not (isinstance(self.max_size, int | np.integer) and self.max_size >= 1):
            raise ValueError(f"max_size must be a positive integer, got {self.max_size!r}")
        n = phi.shape[0]
        i, j, w = positive_weights(phi)
        if self.resolution == "auto":
            if not 0 < self.quantile < 1:
                raise ValueError(f"quantile must lie in (0, 1), got {self.quantile}")
            res = float(np.quantile(w, self.quantile)) if w.size else 1.0
            rule = (f"CPM resolution = {self.quantile:.0%} quantile of the positive off-diagonal phi "
                    f"(symmetrised, scaled to max 1) = {res:.4g}; communities <= {self.max_size}")
        elif isinstance(self.resolution, int | float) and np.isfinite(self.resolution):
            res = float(self.resolution)
            rule = f"fixed CPM resolution {res:.4g} on phi scaled to max 1; communities <= {self.max_size}"
        else:
            raise ValueError(f"resolution must be 'auto' or a finite float, got {self.resolution!r}")
        graph = igraph.Graph(n=n, edges=np.c_[i, j].tolist(), directed=False)
        graph.es["weight"] = w.tolist()
        part = leidenalg.CPMVertexPartition(graph, weights="weight", resolution_parameter=res)
        opt = leidenalg.Optimiser()
        if self.random_state is not None:
            opt.set_rng_seed(int(self.random_state))
        opt.max_comm_size = int(self.max_size)
        opt.community_constraint_enforcement = 10**6  # without it the cap is ignored (leidenalg 0.12)
        opt.optimise_partition(part, n_iterations=int(self.n_iterations))
        labels = relabel_by_size(np.asarray(part.membership, dtype=np.int64))
        largest = int(np.bincount(labels).max())
        if largest > self.max_size:  # never seen with the enforcement above; refuse rather than pass it on
            raise RuntimeError(f"leidenalg returned a community of {largest} > max_size={self.max_size}; "
                               "check the installed leidenalg version (>= 0.10 needed)")
        self.labels_ = labels
        self.resolution_ = res
        self.resolution_rule_ = rule
        self.n_coalitions_ = int(labels.max()) + 1
        self.quality_ = float(part.quality())
        return self

    def fit_predict(self, phi, y=None) -> np.ndarray:
        return self.fit(phi).labels_
