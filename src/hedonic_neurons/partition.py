"""`HedonicPartition`: the scikit-learn-style estimator around PAC-Top-Cover (paper section 3.3).

    >>> from hedonic_neurons import HedonicPartition, planted_game
    >>> phi, truth = planted_game(500, noise=0.1)
    >>> hp = HedonicPartition(m=50_000, omega=5_000).fit(phi)
    >>> hp.labels_, hp.stability_["upper"]

Pure numpy/scipy: no torch here.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from hedonic_neurons.game.samplers import CoalitionSampler, UniformSampler, make_sampler
from hedonic_neurons.game.stability import stability_certificate
from hedonic_neurons.game.top_cover import EMIT_MODES, pac_top_cover
from hedonic_neurons.game.utility import UTILITIES, Game, choose_z, false_partner_z, sample_offdiag

log = logging.getLogger(__name__)


@dataclass
class SolverConfig:
    """Every hyperparameter of `HedonicPartition`, as saved beside results (JSON) and loadable again."""

    k: int = 3
    utility: str = "sum"
    threshold: str | float | None = "auto"
    sampler: str = "partners"
    m: int = 800_000
    omega: int = 80_000
    min_size: int = 2
    max_size: int = 10
    epsilon: float = 0.1
    delta: float = 0.1
    emit: str = "all"
    alpha: float = 0.1
    cost: float = 10.0
    cover_all: bool = True
    n_certificate: int | None = None
    random_state: int | None = 0

    def to_estimator(self, **overrides) -> HedonicPartition:
        return HedonicPartition(**{**dataclasses.asdict(self), **overrides})


def _check_phi(phi, phi_se) -> tuple[np.ndarray, np.ndarray | None]:
    phi = np.asarray(phi)
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1]:
        raise ValueError(f"phi must be a square n x n matrix, got shape {phi.shape}")
    if phi.shape[0] == 0:
        raise ValueError("phi is empty: there are no players to partition")
    if not np.issubdtype(phi.dtype, np.floating):
        phi = phi.astype(np.float64)
    bad = ~np.isfinite(phi)
    if bad.any():
        where = np.argwhere(bad)[:3].tolist()
        raise ValueError(f"phi has {int(bad.sum())} non-finite entries (NaN/inf), e.g. at {where}; "
                         "recompute the valuation or replace them (np.nan_to_num) before fitting")
    diag = np.diagonal(phi)
    if np.any(diag != 0):
        nz = np.flatnonzero(diag)
        raise ValueError(f"phi must be zero on the diagonal (a player is not its own partner); found "
                         f"{nz.size} non-zero diagonal entries, max |phi_ii| = {np.abs(diag).max():.3g} "
                         f"(e.g. player {int(nz[0])}); use np.fill_diagonal(phi, 0)")
    if phi_se is not None:
        phi_se = np.asarray(phi_se)
        if phi_se.shape != phi.shape:
            raise ValueError(f"phi_se must have phi's shape {phi.shape}, got {phi_se.shape}")
        if not np.all(np.isfinite(phi_se)) or np.any(phi_se < 0):
            raise ValueError("phi_se must be finite and non-negative (a standard error per pair)")
    return phi, phi_se


class HedonicPartition:
    """Stable partition of neurons in a top-responsive hedonic game with MFC utilities.

    Parameters
    ----------
    k: partners in a choice set (MFC, section 3.2).
    utility: "sum" (default; (1/k) x sum of the <= k best partners above tau, appendix B.1) or "mean"
        (Algorithm 1's pseudocode). DESIGN.md trap 6 explains why "mean", and "sum" with
        threshold=0, are kept only to reproduce the paper literally.
    threshold: "auto" (tau from the valuation's uncertainty: per pair phi > z * se when `phi_se` is
        given to `fit`, else median + z * robust sd of the off-diagonal phi), a float tau, or None
        (every partner counts). z minimises (1 + cost) x (entries a normal null expects above z)
        minus (entries observed above z), and is never below the z at which a player expects
        `alpha` noise partners among its n - 1.
    sampler: "partners" (seeded proposal from high-phi partners; default), "uniform" (the paper's
        D), "weighted" (proportional to Phi(S), appendix B.2), or a CoalitionSampler.
    m, omega: reservoir size and samples per round (Algorithm 1).
    min_size, max_size: sampled coalition sizes.
    epsilon, delta: PAC targets; the stability certificate checks them on fresh samples.
    emit: "all" sink SCCs per round (default, fast) or "one" (the paper's literal order).
    alpha: floor of the automatic threshold: expected noise partners per player at most alpha.
    cost: how much worse a noise partner is than a missed one, for the automatic threshold.
    cover_all: top up players no sample of a round contains (instead of a degenerate self-loop).
    n_certificate: fresh samples for the certificate (default from epsilon, delta).
    random_state: seed; fixed seed gives identical labels.

    Attributes after fit: labels_, coalitions_, n_coalitions_, stability_, stability_uniform_,
    threshold_, threshold_z_, threshold_rule_, trace_, params_, fit_seconds_.
    """

    def __init__(self, k: int = 3, utility: str = "sum", threshold: str | float | None = "auto",
                 sampler: str | CoalitionSampler = "partners", m: int = 800_000, omega: int = 80_000,
                 min_size: int = 2, max_size: int = 10, epsilon: float = 0.1, delta: float = 0.1,
                 emit: str = "all", alpha: float = 0.1, cost: float = 10.0, cover_all: bool = True,
                 n_certificate: int | None = None, progress: bool = False, random_state: int | None = 0):
        self.k = k
        self.utility = utility
        self.threshold = threshold
        self.sampler = sampler
        self.m = m
        self.omega = omega
        self.min_size = min_size
        self.max_size = max_size
        self.epsilon = epsilon
        self.delta = delta
        self.emit = emit
        self.alpha = alpha
        self.cost = cost
        self.cover_all = cover_all
        self.n_certificate = n_certificate
        self.progress = progress
        self.random_state = random_state

    # scikit-learn conventions -----------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> HedonicPartition:
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"unknown parameter {key!r} for HedonicPartition; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        return f"HedonicPartition({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _validate(self) -> None:
        if not (isinstance(self.k, int | np.integer) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {self.utility!r}")
        if self.emit not in EMIT_MODES:
            raise ValueError(f"emit must be one of {EMIT_MODES}, got {self.emit!r}")
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got min_size={self.min_size}, "
                             f"max_size={self.max_size}")
        if not (int(self.omega) >= 1 and int(self.m) >= int(self.omega)):
            raise ValueError(f"need 1 <= omega <= m (samples per round within the reservoir), got "
                             f"m={self.m}, omega={self.omega}")
        for name in ("epsilon", "delta"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {v}")
        if not self.alpha > 0:
            raise ValueError(f"alpha (expected noise partners per player) must be > 0, got {self.alpha}")
        t = self.threshold
        if not (t is None or t == "auto" or (isinstance(t, int | float) and math.isfinite(t))):
            raise ValueError(f"threshold must be 'auto', a finite float or None, got {t!r}")

    def _game(self, phi: np.ndarray, phi_se: np.ndarray | None) -> Game:
        n = phi.shape[0]
        z_floor = false_partner_z(n, self.alpha)
        if self.threshold == "auto" and phi_se is not None:
            # per pair: a partner must beat its own standard error by the chosen z
            with np.errstate(divide="ignore", invalid="ignore"):
                vals, ses = sample_offdiag([phi, phi_se])
                zs = np.where(ses > 0, vals / np.where(ses > 0, ses, 1.0), np.where(vals > 0, np.inf, 0.0))
            z = choose_z(zs, z_floor, self.cost)
            work = np.where(phi > z * phi_se, phi, 0).astype(phi.dtype, copy=False)
            self.threshold_ = 0.0
            self.threshold_z_ = z
            self.threshold_rule_ = f"per pair: phi_ij > {z:.2f} x se_ij (cost={self.cost}, floor {z_floor:.2f})"
            return Game(work, self.k, 0.0, self.utility)
        if self.threshold == "auto":
            (vals,) = sample_offdiag([phi])
            med = float(np.median(vals))
            sd = 1.4826 * float(np.median(np.abs(vals - med)))
            if sd <= 0:
                tau, z = max(med, 0.0), float("nan")
            else:
                z = choose_z((vals - med) / sd, z_floor, self.cost)
                tau = max(med + z * sd, 0.0)
            self.threshold_ = float(tau)
            self.threshold_z_ = z
            self.threshold_rule_ = (f"median {med:.4g} + {z:.2f} x robust sd {sd:.4g} of off-diagonal phi "
                                    f"(cost={self.cost}, floor {z_floor:.2f})")
            return Game(phi, self.k, tau, self.utility)
        self.threshold_z_ = float("nan")
        if self.threshold is None:
            self.threshold_ = -math.inf
            self.threshold_rule_ = "none: every partner counts"
            return Game(phi, self.k, -math.inf, self.utility)
        self.threshold_ = float(self.threshold)
        self.threshold_rule_ = f"fixed tau = {self.threshold_}"
        return Game(phi, self.k, float(self.threshold), self.utility)

    def fit(self, phi, phi_se=None, y=None) -> HedonicPartition:
        """Partition the players of the game given by `phi` (n x n, zero diagonal).

        `phi_se` (optional, n x n) is the standard error of each entry, used by threshold="auto".
        """
        self._validate()
        phi, phi_se = _check_phi(phi, phi_se)
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        game = self._game(phi, phi_se)
        sampler = make_sampler(self.sampler, self.min_size, self.max_size).bind(game)
        log.info("PAC-Top-Cover: n=%d, k=%d, utility=%s, tau rule: %s, sampler=%s, m=%d, omega=%d",
                 game.n, self.k, self.utility, self.threshold_rule_, sampler.name, self.m, self.omega)
        labels, trace = pac_top_cover(game, sampler, int(self.m), int(self.omega), rng, emit=self.emit,
                                      cover_all=self.cover_all, progress=self.progress)
        self.labels_ = labels
        sizes = np.bincount(labels)
        self.n_coalitions_ = int(sizes.size)
        order = np.argsort(-sizes, kind="stable")
        members = np.argsort(labels, kind="stable")
        groups = np.split(members, np.cumsum(sizes)[:-1])
        self.coalitions_ = [groups[c] for c in order]
        self.trace_ = trace
        self.stability_ = stability_certificate(game, labels, sampler, self.epsilon, self.delta, rng,
                                                self.n_certificate)
        uniform = UniformSampler(self.min_size, self.max_size).bind(game)
        self.stability_uniform_ = stability_certificate(game, labels, uniform, self.epsilon, self.delta, rng,
                                                        self.n_certificate)
        self.sampler_ = sampler
        self.fit_seconds_ = time.perf_counter() - t0
        params = {k: v for k, v in self.get_params().items() if k != "sampler"}
        self.params_ = {**params, "sampler": sampler.describe(), "threshold_value": self.threshold_,
                        "threshold_rule": self.threshold_rule_, "n_players": int(game.n),
                        "rounds": len(trace)}
        log.info("PAC-Top-Cover: %d coalitions in %d rounds, %.1f s; blocking rate %.4f (upper %.4f)",
                 self.n_coalitions_, len(trace), self.fit_seconds_, self.stability_["rate"],
                 self.stability_["upper"])
        return self

    def fit_predict(self, phi, phi_se=None, y=None) -> np.ndarray:
        return self.fit(phi, phi_se).labels_

    def config(self) -> SolverConfig:
        """The hyperparameters as a SolverConfig dataclass (a custom sampler is saved by name)."""
        params = self.get_params()
        params.pop("progress")
        if isinstance(params["sampler"], CoalitionSampler):
            params["sampler"] = params["sampler"].name
        return SolverConfig(**params)
