"""`HedonicPartition`: the scikit-learn-style hedonic-game partitioner (paper section 3).

    >>> from hedonic_neurons import HedonicPartition, planted_game
    >>> phi, truth = planted_game(500, noise=0.1)
    >>> hp = HedonicPartition().fit(phi)                  # default: fractional utility, best response
    >>> hp.labels_, hp.stability_["improving_players"]
    >>> HedonicPartition(preset="topk").fit(phi)          # MFC top-k utility + PAC-Top-Cover
    >>> HedonicPartition(preset="paper").fit(phi)         # the paper's Algorithm 1 as written

The default utility counts every member, u_i(S) = sum_{j in S} (phi_ij - tau) / |S| (fractional
hedonic), and is solved by best-response dynamics in a fixed priority order (strongest player first)
with the size cap enforced (`game.dynamics`):
on real valuations the MFC top-k utility chains into giant coalitions (a player whose top k partners are
inside a giant coalition is as content there as anywhere, so nothing blocks it).

Pure numpy/scipy: no torch here.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hedonic_neurons.game.dynamics import (
    absorb_singletons,
    best_response,
    improving_players,
    priority_order,
    relabel_by_size,
)
from hedonic_neurons.game.samplers import CoalitionSampler, UniformSampler, make_sampler
from hedonic_neurons.game.stability import partition_shape, partition_synergy, stability_certificate
from hedonic_neurons.game.top_cover import EMIT_MODES, pac_top_cover
from hedonic_neurons.game.utility import (
    SEPARABLE_UTILITIES,
    UTILITIES,
    Game,
    choose_z,
    false_partner_z,
    partner_quantile,
    positive_quantile,
    sample_offdiag,
)

# Named settings: a preset fills every parameter left at its constructor default.
PRESETS: dict[str | None, dict] = {
    None: {},  # the default: fractional utility, tau at the 97th percentile of the positive phi (TAU_DEFAULT),
    # dynamics in the priority order, then the players left alone group among themselves at the 84th
    # percentile (ABSORB_DEFAULT)
    # two tiers at q90 / q86, random turn orders (8 runs, the best welfare kept)
    "random-order": {"order": "random", "tau_quantile": 0.9, "absorb_quantile": 0.86},
    "fractional": {"absorb_quantile": None, "order": "random", "tau_quantile": 0.9},  # one tier, q90
    "topk": {"utility": "sum"},  # the MFC top-k utility above a significance tau, PAC-Top-Cover
    "paper": {"utility": "mean", "threshold": None, "sampler": "uniform", "emit": "one", "cover_all": False},
}

log = logging.getLogger(__name__)

# The two tiers' costs, quantiles of the positive phi (docs/solver.md). A strict first tier (q97:
# only the cores of the strongest pairs form) and a second at q84 for the players it leaves alone gave more
# held-out Pair, split-half ARI and coverage on MNIST than q90 / q86 (two networks). q97 alone broke small
# games (the cut fell inside the signal: planted n = 48 recovered at ARI 0.72); tier 1's quantile is now
# lowered where a player would have fewer than its top k partners above it (game.utility.partner_quantile).
TAU_DEFAULT = 0.97
ABSORB_DEFAULT = 0.84


@dataclass
class SolverConfig:
    """Every hyperparameter of `HedonicPartition`, as saved beside results (JSON) and loadable again.

    The one declaration of the solver's parameters and their defaults: `HedonicPartition.__init__`
    takes its defaults from here, the experiments nest it (``MnistConfig.solver``,
    ``RerankerConfig.solver``) and every command's solver flags are generated from it
    (``configs.add_config_flags``). The experiments set ``random_state`` per seed.
    """

    HELP: ClassVar[dict[str, str]] = {
        "k": "partners in a choice set (MFC, section 3.2)",
        "preset": "random-order: tiers q90 / q86, random turn orders (8 runs); fractional: one "
                  "tier, q90, random orders; topk: the MFC top-k utility with PAC-Top-Cover; paper: Algorithm 1 "
                  "as written",
        "utility": "fractional / additive (best-response dynamics) or sum / mean (MFC, PAC-Top-Cover)",
        "threshold": "tau: auto, quantile, significance, none (MFC only) or a number",
        "tau_quantile": "quantile of the positive phi used by threshold 'quantile'",
        "absorb_quantile": "second tier's cost (a quantile of the positive phi) for the players the first leaves "
                           "alone; none: one tier",
        "init": "best-response start: singletons",
        "order": "best-response turn order: priority (strongest player first, deterministic) or random",
        "n_init": "best-response restarts with random orders (auto: 8 up to 4096 players, 1 above; "
                  "priority order: 1)",
        "max_sweeps": "cap on best-response sweeps",
        "sampler": "D of PAC-Top-Cover and of the blocking certificate",
        "m": "PAC-Top-Cover reservoir size (the MFC utilities sum / mean only)",
        "omega": "PAC-Top-Cover samples per round (the MFC utilities sum / mean only)",
        "min_size": "smallest sampled coalition",
        "max_size": "largest sampled coalition; caps best-response coalitions and Leiden communities",
        "epsilon": "PAC target epsilon (checked by the certificate)",
        "delta": "PAC target delta",
        "emit": "all sink SCCs per round or one (the paper's order)",
        "alpha": "significance floor: expected noise partners per player",
        "cost": "significance threshold: cost of a noise partner vs a missed one",
        "cover_all": "top up players no sample of a round contains",
        "n_certificate": "fresh samples for the blocking certificate (none: from epsilon, delta)",
        "random_state": "solver seed",
    }
    METAVAR: ClassVar[dict[str, str]] = {
        "threshold": "{auto,quantile,significance,none}|TAU", "tau_quantile": "Q", "absorb_quantile": "Q|none",
        "n_init": "auto|N", "n_certificate": "N|none",
    }
    CHOICES: ClassVar[dict[str, list]] = {
        "preset": [None, "random-order", "fractional", "topk", "paper"],
        "utility": ["fractional", "additive", "average", "sum", "mean"],
        "sampler": ["partners", "uniform", "weighted"], "emit": ["all", "one"], "order": ["priority", "random"],
    }

    k: int = 3
    preset: str | None = None
    utility: str = "fractional"
    threshold: str | float | None = "auto"
    tau_quantile: float = TAU_DEFAULT
    absorb_quantile: float | None = ABSORB_DEFAULT
    init: str = "singletons"
    order: str = "priority"
    n_init: int | str = "auto"
    max_sweeps: int = 100
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


_D = SolverConfig()  # HedonicPartition's defaults: declared once, in SolverConfig


def _check_phi(phi, phi_se) -> tuple[np.ndarray, np.ndarray | None]:
    phi = np.asarray(phi)
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1]:
        raise ValueError(f"phi must be a square n x n matrix, got shape {phi.shape}")
    if phi.shape[0] == 0:
        raise ValueError("phi is empty: there are no players to partition")
    if phi.dtype.kind not in "fiub":
        raise ValueError(f"phi has dtype {phi.dtype}: give a real-valued matrix (float32 or float64)")
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
    """Stable partition of neurons in a hedonic game on a pairwise valuation phi.

    Parameters
    ----------
    preset: None (the default below), "random-order" (tiers at q90 / q86 with 8 random turn orders,
        the best welfare kept), "fractional" (one tier, q90, random orders), "topk" (MFC
        top-k utility "sum" with a significance tau, PAC-Top-Cover) or "paper" (Algorithm 1 as written:
        utility "mean", no tau, the uniform D, one sink SCC per round, no top-up). A preset fills every
        parameter left at its constructor default; parameters given explicitly win.
    utility: "fractional" (default; u_i(S) = sum_{j in S, j != i} (phi_ij - tau) / |S|), "additive"
        (the same sum, not divided: a potential game whose potential is Leiden's CPM objective), both
        solved by best-response dynamics with the size cap (`game.dynamics`); or the MFC utilities
        solved by PAC-Top-Cover: "sum" ((1/k) x sum of the <= k best partners above tau, appendix
        B.1) or "mean" (Algorithm 1's pseudocode). Why fractional: the MFC utilities chain into giant
        coalitions on real valuations, and "mean" makes a pair with the best friend every player's best.
    threshold: tau, the per-partner cost / significance cut. "auto": for the separable utilities
        the `tau_quantile` quantile of the positive off-diagonal phi ("quantile"); for the MFC
        utilities the significance rule ("significance": per pair phi > z * se when `phi_se` is given
        to `fit`, else median + z * robust sd of the off-diagonal phi, z minimising (1 + cost) x
        (entries a normal null expects above z) minus (entries observed above z), never below the z
        at which a player expects `alpha` noise partners among its n - 1). Also "quantile",
        "significance", a float tau, or None (MFC only: every partner counts).
    tau_quantile: quantile of the positive off-diagonal (symmetrised) phi used by "quantile" (0.97), lowered
        where needed so that a player has on average at least its top `k` partners above tau (small games).
    absorb_quantile: second tier (separable utilities, quantile tau only): after the dynamics settle,
        the players left alone play the same game among themselves, the coalitions already formed
        closed to them, at the lower cost tau_2 = this quantile of the positive phi (with the same
        significance floor as tau; 0.84 by default). None: one tier.
    init: best-response start: "singletons" (everyone alone) or an array of labels (e.g. Leiden's
        partition, which the dynamics then certify or improve; oversized coalitions are cut).
    order: best-response turn order: "priority" (default: players by decreasing strength, their best
        partner's phi, the same order every sweep; the result depends on phi only, so two nearly equal
        valuations give nearly the same partition) or "random" (a seeded random order each sweep).
    n_init: with order="random", best-response runs from different random orders, the one with the
        highest welfare (sum of the players' utilities) kept, as KMeans keeps its best start; "auto": 8
        up to n = 4096 players, 1 above (each run costs O(n^2) per sweep).
    max_sweeps: cap on best-response sweeps (the fractional dynamics have no potential to bound them).
    k: partners in a choice set (MFC, section 3.2; for separable utilities the reported choice sets and the
        floor of tier 1's quantile: at least k partners per player on average above tau).
    sampler: D of PAC-Top-Cover and of the blocking certificate: "partners" (seeded proposal from
        high-phi partners; default), "uniform" (the paper's D), "weighted" (proportional to Phi(S),
        appendix B.2), or a CoalitionSampler.
    m, omega: reservoir size and samples per round (Algorithm 1; PAC-Top-Cover only).
    min_size, max_size: sampled coalition sizes; max_size also caps the best-response coalitions.
    epsilon, delta: PAC targets; the stability certificate checks them on fresh samples.
    emit: "all" sink SCCs per round (default, fast) or "one" (the paper's literal order).
    alpha: floor of the significance threshold: expected noise partners per player at most alpha.
    cost: how much worse a noise partner is than a missed one, for the significance threshold.
    cover_all: top up players no sample of a round contains (instead of a degenerate self-loop).
    n_certificate: fresh samples for the blocking certificate (default from epsilon, delta).
    random_state: seed; fixed seed gives identical labels.

    Attributes after fit: labels_, coalitions_, n_coalitions_, stability_ (the stability notion,
    its measurement, the blocking rate and the share of players in coalitions of size <= max_size),
    stability_uniform_, threshold_, threshold_z_, threshold_rule_, trace_, params_, fit_seconds_; for the
    best-response dynamics, per tier ({"tier1": ..., "tier2": ...}): n_sweeps_, cycle_length_ (None: no cycle),
    and converged_ (every tier settled). When the dynamics cycle under the fixed turn order they stop at the
    first repeated state and return the state of the cycle with the fewest players able to improve (ties:
    the highest welfare, then the earliest); stability_ says so (converged, cycle_detected, cycle_length,
    returned, improving_at_stop: players able to improve in that tier's own game when it stopped, and the same
    prefixed tier2_; improving_players is the two-tier certificate of the final partition, which does not
    count a player tier 1 left alone and tier 2 regrouped, so it can read 0 after a tier-1 cycle).
    `score(phi_eval)` gives the held-out Pair; `certificate(phi_eval, psi_eval)` the full report.
    """

    def __init__(self, k: int = _D.k, preset: str | None = _D.preset, utility: str = _D.utility,
                 threshold: str | float | None = _D.threshold, tau_quantile: float = _D.tau_quantile,
                 absorb_quantile: float | None = _D.absorb_quantile,
                 init=_D.init, order: str = _D.order, n_init: int | str = _D.n_init,
                 max_sweeps: int = _D.max_sweeps,
                 sampler: str | CoalitionSampler = _D.sampler, m: int = _D.m, omega: int = _D.omega,
                 min_size: int = _D.min_size, max_size: int = _D.max_size, epsilon: float = _D.epsilon,
                 delta: float = _D.delta, emit: str = _D.emit, alpha: float = _D.alpha, cost: float = _D.cost,
                 cover_all: bool = _D.cover_all, n_certificate: int | None = _D.n_certificate,
                 progress: bool = False, random_state: int | None = _D.random_state):
        self.k = k
        self.preset = preset
        self.utility = utility
        self.threshold = threshold
        self.tau_quantile = tau_quantile
        self.absorb_quantile = absorb_quantile
        self.init = init
        self.order = order
        self.n_init = n_init
        self.max_sweeps = max_sweeps
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
        changed = {k: v for k, v in self.get_params().items() if not _same(defaults.get(k), v)}
        return f"HedonicPartition({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _resolve(self) -> None:
        """Effective settings: the preset fills parameters left at their constructor default."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        eff = self.get_params()
        for key, value in PRESETS[self.preset].items():
            if _same(eff[key], defaults[key]):
                eff[key] = value
        self._eff = eff

    def _validate(self) -> None:
        self._resolve()
        e = self._eff
        if not (isinstance(self.k, int | np.integer) and self.k >= 1):
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if e["utility"] not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {e['utility']!r}")
        if e["utility"] in SEPARABLE_UTILITIES and e["threshold"] is None:
            raise ValueError(f"utility={e['utility']!r} needs a finite tau (the cost of a partner): use "
                             "threshold='auto', 'quantile', 'significance' or a float")
        if not 0 < e["tau_quantile"] < 1:
            raise ValueError(f"tau_quantile must lie in (0, 1), got {e['tau_quantile']}")
        aq = e["absorb_quantile"]
        if aq is not None and not (isinstance(aq, int | float) and 0 < aq < 1):
            raise ValueError(f"absorb_quantile must lie in (0, 1) or be None (one tier), got {aq!r}")
        if not (isinstance(self.max_sweeps, int | np.integer) and self.max_sweeps >= 1):
            raise ValueError(f"max_sweeps must be a positive integer, got {self.max_sweeps!r}")
        if not (self.n_init == "auto" or (isinstance(self.n_init, int | np.integer) and self.n_init >= 1)):
            raise ValueError(f"n_init must be 'auto' or a positive integer, got {self.n_init!r}")
        if e["order"] not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {e['order']!r}")
        if isinstance(self.init, str) and self.init != "singletons":
            raise ValueError(f"init must be 'singletons' or an array of labels, got {self.init!r}")
        if e["emit"] not in EMIT_MODES:
            raise ValueError(f"emit must be one of {EMIT_MODES}, got {e['emit']!r}")
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
        t = e["threshold"]
        if not (t is None or t in THRESHOLDS or (isinstance(t, int | float) and math.isfinite(t))):
            raise ValueError(f"threshold must be one of {THRESHOLDS}, a finite float or None, got {t!r}")

    def _game(self, phi: np.ndarray, phi_se: np.ndarray | None) -> Game:
        n = phi.shape[0]
        utility = self._eff["utility"]
        rule = self._eff["threshold"]
        if rule == "auto":
            rule = "quantile" if utility in SEPARABLE_UTILITIES else "significance"
        z_floor = false_partner_z(n, self.alpha)
        self._floor = None  # the significance floor of a quantile tau (the second tier uses it too)
        if rule == "quantile":
            tq0 = self._eff["tau_quantile"]
            # never so strict that a player has on average fewer than its top k partners above tau (small games)
            tq = partner_quantile(phi, tq0, self.k)
            tau = positive_quantile(phi, tq)
            self.threshold_ = tau
            self.threshold_z_ = float("nan")
            self.threshold_rule_ = (f"tau = {tq:.0%} quantile of the positive off-diagonal phi "
                                    f"(symmetrised) = {tau:.4g}" if tq == tq0 else
                                    f"tau = {tq:.1%} quantile of the positive off-diagonal phi (symmetrised) = "
                                    f"{tau:.4g} (lowered from {tq0:.0%} so that a player has on average its "
                                    f"top k = {self.k} partners above it)")
            if phi_se is not None:
                # a significance floor: the quantile rule always admits the top positive entries, so on
                # a valuation that is pure noise it would pair players up; tau never goes below z x the
                # typical standard error (z: a player expects `alpha` noise partners among its n - 1)
                (ses,) = sample_offdiag([phi_se])
                floor = z_floor * float(np.median(ses))
                self._floor = floor
                if floor > tau:
                    tau = floor
                    self.threshold_ = tau
                self.threshold_z_ = z_floor
                self.threshold_rule_ += (f", floored at {z_floor:.2f} x median se = {floor:.4g}"
                                         + (" (the floor binds)" if floor >= tau and floor > 0 else ""))
            return Game(phi, self.k, tau, utility)
        if rule == "significance" and phi_se is not None:
            # per pair: a partner must beat its own standard error by the chosen z
            with np.errstate(divide="ignore", invalid="ignore"):
                vals, ses = sample_offdiag([phi, phi_se])
                zs = np.where(ses > 0, vals / np.where(ses > 0, ses, 1.0), np.where(vals > 0, np.inf, 0.0))
            z = choose_z(zs, z_floor, self.cost)
            work = np.where(phi > z * phi_se, phi, 0).astype(phi.dtype, copy=False)
            self.threshold_ = 0.0
            self.threshold_z_ = z
            self.threshold_rule_ = f"per pair: phi_ij > {z:.2f} x se_ij (cost={self.cost}, floor {z_floor:.2f})"
            return Game(work, self.k, 0.0, utility)
        if rule == "significance":
            (vals,) = sample_offdiag([phi])
            med = float(np.median(vals))
            sd = 1.4826 * float(np.median(np.abs(vals - med)))
            if sd <= 0:
                tau, z = max(med, 0.0), float("nan")
                # the robust scale is 0 (over half the entries equal the median): no z-score exists, and
                # with tau = max(median, 0) near-noise entries count as partners, the macro-coalition regime
                self._warn(f"threshold: the robust sd (MAD) of the off-diagonal phi is 0 (over half its entries "
                           f"equal the median {med:.4g}), so tau fell back to max(median, 0) = {tau:.4g} and "
                           "every phi above it counts as a partner (docs/solver.md, macro coalitions); pass "
                           "standard errors (phi_se, --se-key), or threshold='quantile' or a number")
            else:
                z = choose_z((vals - med) / sd, z_floor, self.cost)
                tau = max(med + z * sd, 0.0)
            self.threshold_ = float(tau)
            self.threshold_z_ = z
            self.threshold_rule_ = (f"median {med:.4g} + {z:.2f} x robust sd {sd:.4g} of off-diagonal phi "
                                    f"(cost={self.cost}, floor {z_floor:.2f})")
            return Game(phi, self.k, tau, utility)
        self.threshold_z_ = float("nan")
        if rule is None:
            self.threshold_ = -math.inf
            self.threshold_rule_ = "none: every partner counts"
            return Game(phi, self.k, -math.inf, utility)
        self.threshold_ = float(rule)
        self.threshold_rule_ = f"fixed tau = {self.threshold_}"
        return Game(phi, self.k, float(rule), utility)

    def _warn(self, message: str) -> None:
        from hedonic_neurons.notices import warn

        self.warnings_.append(message)
        warn(message)

    def fit(self, phi, phi_se=None, y=None) -> HedonicPartition:
        """Partition the players of the game given by `phi` (n x n, zero diagonal).

        `phi_se` (optional, n x n) is the standard error of each entry, used by the significance tau.
        """
        self._validate()
        e = self._eff
        phi, phi_se = _check_phi(phi, phi_se)
        self.warnings_: list[str] = []  # fallbacks that changed the result (also emitted as ResultWarning)
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        game = self._game(phi, phi_se)
        sampler = make_sampler(e["sampler"], self.min_size, self.max_size).bind(game)
        info: dict = {}
        self.tier2_threshold_ = None
        if game.utility in SEPARABLE_UTILITIES:
            log.info("best-response dynamics: n=%d, utility=%s, tau rule: %s, max_size=%d",
                     game.n, game.utility, self.threshold_rule_, self.max_size)
            init = None if isinstance(self.init, str) else np.asarray(self.init)
            order = priority_order(game.phi) if e["order"] == "priority" else None
            if order is not None:  # a fixed order: every run would reach the same partition
                n_init = 1
            else:
                n_init = (8 if game.n <= 4096 else 1) if self.n_init == "auto" else int(self.n_init)
            best = None
            for run in range(n_init):
                lab, inf = best_response(game.phi, game.tau, game.utility, self.max_size, rng, init=init,
                                         max_sweeps=int(self.max_sweeps), order=order)
                inf["run"] = run
                if best is None or inf["potential"] > best[1]["potential"]:
                    best = (lab, inf)
            labels, info = best
            info["n_init"] = n_init
            self.tier2_threshold_ = self._tier2_tau(phi, game)
            if self.tier2_threshold_ is not None:
                labels, tier2 = absorb_singletons(game.phi, labels, self.tier2_threshold_, game.utility,
                                                  self.max_size, rng, max_sweeps=int(self.max_sweeps), order=order)
                info.update(tier2)
                log.info("second tier: %d players left alone regrouped at tau_2 = %.4g", tier2["tier2_players"],
                         self.tier2_threshold_)
            labels = relabel_by_size(labels)
            trace = [{"sweep": s, "moves": mv} for s, mv in enumerate(info["moves"])]
        else:
            log.info("PAC-Top-Cover: n=%d, k=%d, utility=%s, tau rule: %s, sampler=%s, m=%d, omega=%d",
                     game.n, self.k, game.utility, self.threshold_rule_, sampler.name, self.m, self.omega)
            labels, trace = pac_top_cover(game, sampler, int(self.m), int(self.omega), rng, emit=e["emit"],
                                          cover_all=e["cover_all"], progress=self.progress)
        self.labels_ = labels
        sizes = np.bincount(labels)
        self.n_coalitions_ = int(sizes.size)
        order = np.argsort(-sizes, kind="stable")
        members = np.argsort(labels, kind="stable")
        groups = np.split(members, np.cumsum(sizes)[:-1])
        self.coalitions_ = [groups[c] for c in order]
        self.trace_ = trace
        self.game_ = game
        self.stability_ = self._stability(game, labels, sampler, rng, info)
        self._dynamics_summary(game, info)
        uniform = UniformSampler(self.min_size, self.max_size).bind(game)
        self.stability_uniform_ = stability_certificate(game, labels, uniform, self.epsilon, self.delta, rng,
                                                        self.n_certificate)
        self.sampler_ = sampler
        self.fit_seconds_ = time.perf_counter() - t0
        params = {k: v for k, v in e.items() if k not in ("sampler", "init")}
        self.params_ = {**params, "sampler": sampler.describe(), "threshold_value": self.threshold_,
                        "init": self.init if isinstance(self.init, str) else "labels",
                        "solver": "best_response" if game.utility in SEPARABLE_UTILITIES else "pac_top_cover",
                        "threshold_rule": self.threshold_rule_, "n_players": int(game.n),
                        "rounds": len(trace), "warnings": list(self.warnings_)}
        log.info("%s: %d coalitions, %.1f s; %s", self.params_["solver"], self.n_coalitions_, self.fit_seconds_,
                 {k: self.stability_[k] for k in ("improving_players", "rate", "share_within_max_size")})
        return self

    def _dynamics_summary(self, game: Game, info: dict) -> None:
        """converged_, cycle_length_, n_sweeps_: per tier of the best-response dynamics (None for PAC-Top-Cover)."""
        if game.utility not in SEPARABLE_UTILITIES:
            self.converged_ = self.cycle_length_ = self.n_sweeps_ = None
            return
        tiers = ["tier1"] + (["tier2"] if self.tier2_threshold_ is not None else [])
        pre = {"tier1": "", "tier2": "tier2_"}
        self.converged_ = all(bool(info.get(pre[t] + "converged", False)) for t in tiers)
        self.cycle_length_ = {t: info.get(pre[t] + "cycle_length") for t in tiers}
        self.n_sweeps_ = {t: int(info.get(pre[t] + "sweeps", 0)) for t in tiers}

    def _tier2_tau(self, phi: np.ndarray, game: Game) -> float | None:
        """tau_2 of the second tier, or None (one tier: MFC utility, a fixed tau, or absorb_quantile None)."""
        aq = self._eff["absorb_quantile"]
        rule = self._eff["threshold"]
        if aq is None or rule not in ("auto", "quantile") or game.utility not in SEPARABLE_UTILITIES:
            return None
        tau2 = positive_quantile(phi, aq)
        floor = getattr(self, "_floor", None)
        if floor is not None:
            tau2 = max(tau2, floor)
        tau2 = min(tau2, game.tau)  # never above tier 1's cost
        self.threshold_rule_ += (f"; second tier: players left alone regroup among themselves at tau_2 = "
                                 f"{aq:.0%} quantile of the positive phi = {tau2:.4g}"
                                 + (" (floored)" if floor is not None and tau2 == floor else ""))
        return tau2

    def _stability(self, game: Game, labels: np.ndarray, sampler: CoalitionSampler, rng: np.random.Generator,
                   info: dict) -> dict:
        """The certificate: the notion guaranteed, its measurement, the blocking rate, the partition's shape."""
        cert = stability_certificate(game, labels, sampler, self.epsilon, self.delta, rng, self.n_certificate)
        if game.utility in SEPARABLE_UTILITIES:
            movers = improving_players(game.phi, labels, game.tau, game.utility, self.max_size)
            tau2 = getattr(self, "tier2_threshold_", None)
            tier2 = None
            if tau2 is not None:
                # two tiers: players of tier-1 coalitions must have no improving move at tau (to any
                # coalition with room); the regrouped players none at tau_2 among the regrouped
                t2 = info.get("tier2_set", np.zeros(0, dtype=np.int64))
                movers = np.setdiff1d(movers, t2)
                tier2 = 0
                if t2.size:
                    tier2 = int(improving_players(game.phi[np.ix_(t2, t2)], labels[t2], tau2, game.utility,
                                                  self.max_size).size)
            notion = (f"Nash stable under the size cap {self.max_size} (no player gains by moving alone to a "
                      "coalition with room, or by leaving); implies individual stability"
                      + (". Additive + symmetric phi: a potential game (CPM potential), so the dynamics "
                         "always converge" if game.utility == "additive" else
                         ". Fractional: no potential in general; converged says whether the dynamics settled, "
                         "cycle_length whether they cycled instead (a state repeated under the fixed turn order: "
                         "the run stopped there and returned the state of the cycle that returned names)"))
            if tier2 is not None:
                notion += (f". Two tiers: this holds at tau for the players of the first tier's coalitions (moves "
                           f"into any coalition counted), and at tau_2 for the {len(t2)} players regrouped among "
                           "themselves (improving_players_tier2)")
            extra = {"notion": notion, "improving_players": int(movers.size),
                     "nash_stable": bool(movers.size == 0 and not tier2),
                     "converged": bool(info.get("converged", False)),
                     "cycle_detected": info.get("cycle_length") is not None,
                     "cycle_length": info.get("cycle_length"), "returned": info.get("returned"),
                     "improving_at_stop": info.get("improving"),
                     "sweeps": int(info.get("sweeps", 0)), "max_sweeps": int(self.max_sweeps),
                     "potential": info.get("potential"), "n_init": int(info.get("n_init", 1))}
            if tier2 is not None:
                extra |= {"improving_players_tier2": tier2, "tier2_players": int(len(t2)),
                          "tier2_converged": bool(info.get("tier2_converged", False)),
                          "tier2_cycle_detected": info.get("tier2_cycle_length") is not None,
                          "tier2_cycle_length": info.get("tier2_cycle_length"),
                          "tier2_returned": info.get("tier2_returned"),
                          "tier2_improving_at_stop": info.get("tier2_improving"),
                          "tier2_sweeps": int(info.get("tier2_sweeps", 0)), "tier2_threshold": float(tau2)}
        else:
            extra = {"notion": "core stability of Top Covering for top-responsive preferences, here PAC: the "
                               "sampled blocking rate under D (paper section 3.3)",
                     "improving_players": None, "nash_stable": None}
        return {**cert, **extra, **partition_shape(labels, self.max_size)}

    def score(self, phi_eval, y=None) -> float:
        """Held-out Pair: mean over coalitions of size >= 2 of their mean phi_eval(i, j) (eq. 8).

        Give a valuation computed on inputs the partition was NOT fitted on (cross-fitting).
        """
        return float(partition_synergy(self.labels_, np.asarray(phi_eval))["pair"])

    def certificate(self, phi_eval=None, psi_eval=None) -> dict:
        """stability_ plus, when given an evaluation valuation, held-out Pair (with its 95 % CI over
        coalitions) and Ratio (with `psi_eval`, the singles of eq. 6)."""
        out = dict(self.stability_)
        if phi_eval is not None:
            syn = partition_synergy(self.labels_, np.asarray(phi_eval), psi_eval)
            out.update({f"heldout_{k}": v for k, v in syn.items()})
        return out

    def fit_predict(self, phi, phi_se=None, y=None) -> np.ndarray:
        return self.fit(phi, phi_se).labels_

    def config(self) -> SolverConfig:
        """The hyperparameters as a SolverConfig dataclass (a custom sampler is saved by name)."""
        params = self.get_params()
        params.pop("progress")
        if isinstance(params["sampler"], CoalitionSampler):
            params["sampler"] = params["sampler"].name
        if not isinstance(params["init"], str):
            raise ValueError("a partition given as init cannot be saved in a SolverConfig; save the labels instead")
        return SolverConfig(**params)


THRESHOLDS = ("auto", "quantile", "significance")
ORDERS = ("priority", "random")


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    return a == b if type(a) is type(b) else (a is b)
