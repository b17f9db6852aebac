"""Best-response dynamics for hedonic games whose utility counts every member.

Such a utility cannot chain into giant coalitions as the top-k one does (a top-k player ignores every
member beyond its k best partners, negative ones included).

u_i(S) = sum_{j in S, j != i} (phi_ij - tau)            ("additive": additively separable)
u_i(S) = sum_{j in S, j != i} (phi_ij - tau) / |S|      ("fractional": fractional hedonic)
u_i(S) = sum_{j in S, j != i} (phi_ij - tau) / (|S|-1)  ("average": modified fractional, the mean partner)

Players move one at a time, in a fixed priority order (`priority_order`: strongest first; the default)
or a seeded random order, to the coalition (of size < max_size, or an
empty one: alone) that maximises their utility, until a whole sweep moves no one. The result is
then Nash stable under the size cap: no player can improve by a unilateral move to a coalition with
room, or by leaving; hence also individually stable.

Why it stops (additive): for a symmetric phi the game is a potential game with potential
P(pi) = sum over coalitions C of sum_{i<j in C} (phi_ij - tau), the CPM objective with resolution
tau (what Leiden maximises); every improving move raises P by exactly the mover's gain, so the
dynamics cannot cycle. The fractional utilities have no such potential in general and do cycle on
real valuations: with a fixed turn order a repeated state is detected and the run stops there, returning
the state of the cycle with the fewest players able to improve (`best_response`); otherwise the dynamics
are capped at `max_sweeps`; `converged` says whether they settled.

Cost: one O(n) pass per player per sweep (the row of phi summed per coalition); pure numpy.
"""

from __future__ import annotations

import numpy as np

from hedonic_neurons.game.utility import SEPARABLE_UTILITIES


def _check(phi: np.ndarray, utility: str, max_size: int) -> None:
    if utility not in SEPARABLE_UTILITIES:
        raise ValueError(f"best-response dynamics need a separable utility {SEPARABLE_UTILITIES}, got {utility!r}")
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1]:
        raise ValueError(f"phi must be square, got shape {phi.shape}")


def _initial(n: int, init: np.ndarray | None, max_size: int) -> np.ndarray:
    """Coalition slots 0..n-1 (a slot per player, so there is always an empty one to leave to)."""
    if init is None:
        return np.arange(n, dtype=np.int64)
    init = np.asarray(init).ravel()
    if init.shape != (n,):
        raise ValueError(f"init labels have shape {init.shape}, expected ({n},)")
    _, inv = np.unique(init, return_inverse=True)
    labels = np.empty(n, dtype=np.int64)
    next_id = 0
    for c in range(int(inv.max()) + 1):
        mem = np.flatnonzero(inv == c)
        for start in range(0, mem.size, max_size):  # an oversized start is cut into full pieces
            labels[mem[start : start + max_size]] = next_id
            next_id += 1
    return labels


def move_values(row: np.ndarray, labels: np.ndarray, sizes: np.ndarray, own: int, utility: str) -> np.ndarray:
    """Player i's utility in every coalition slot if it moved there (own slot: where it is now).

    `row` = phi_i. - tau with row[i] = 0; empty slots are worth 0 (alone).
    """
    sums = np.bincount(labels, weights=row, minlength=sizes.size)
    if utility == "additive":
        return sums
    if utility == "average":  # divide by the partners: |S| - 1
        partners = sizes.copy()
        partners[own] = sizes[own] - 1.0
        return np.where(partners > 0, sums / np.maximum(partners, 1.0), 0.0)
    after = sizes + 1.0
    after[own] = sizes[own]
    return sums / after


def improving_players(phi: np.ndarray, labels: np.ndarray, tau: float, utility: str, max_size: int,
                      tol: float = 0.0) -> np.ndarray:
    """Players with a strictly improving unilateral move (to a coalition with room, or alone).

    An empty array means the partition is Nash stable under the size cap (hence individually stable).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    _, lab = np.unique(labels, return_inverse=True)
    lab = np.concatenate([lab, [lab.max() + 1]]) if n else lab  # one empty slot: alone
    sizes = np.bincount(lab[:n], minlength=lab.max() + 1).astype(np.float64)
    out = []
    for i in range(n):
        row = np.asarray(phi[i], dtype=np.float64) - tau
        row[i] = 0.0
        vals = move_values(np.append(row, 0.0), lab, sizes, int(lab[i]), utility)
        feasible = sizes < max_size
        feasible[lab[i]] = True
        if np.max(np.where(feasible, vals, -np.inf)) > vals[lab[i]] + tol:
            out.append(i)
    return np.asarray(out, dtype=np.int64)


CYCLE_RULE = "fewest improving players, then highest welfare, then the earliest in the cycle"


def _sweep(phi: np.ndarray, labels: np.ndarray, sizes: np.ndarray, tau: float, utility: str, max_size: int,
           players: np.ndarray, tol: float) -> int:
    """One sweep: each player in turn moves to its best coalition with room (in place). Returns the moves."""
    moved = 0
    for i in players:
        row = np.asarray(phi[i], dtype=np.float64) - tau
        row[i] = 0.0
        own = int(labels[i])
        vals = move_values(row, labels, sizes, own, utility)
        here = vals[own]
        vals[sizes >= max_size] = -np.inf
        vals[own] = here
        best = int(np.argmax(vals))  # first maximum: the smallest slot id, deterministic
        if best != own and vals[best] > vals[own] + tol:
            labels[i] = best
            sizes[own] -= 1
            sizes[best] += 1
            moved += 1
    return moved


def best_response(
    phi: np.ndarray, tau: float, utility: str = "fractional", max_size: int = 10,
    rng: np.random.Generator | None = None, init: np.ndarray | None = None, max_sweeps: int = 100,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Best-response dynamics from `init` (default: everyone alone). Returns (labels, info).

    `order`: the players' turn order in every sweep (a priority order, deterministic); None: a fresh
    random permutation from `rng` each sweep.

    With a fixed order a sweep is a function of the state (every player's coalition slot), so a state seen
    after an earlier sweep means the dynamics cycle forever: they stop there, and the state of the cycle
    returned is the one with the fewest players able to improve (closest to the Nash stability the solver
    reports), ties to the highest welfare, then the earliest (`CYCLE_RULE`). A run that converges never
    repeats a state, so its result is the same as without the check. Random orders have no such proof
    (a state may recur under a different order): they run to `max_sweeps` and return the last state.

    info: sweeps, moves per sweep, converged (a sweep with no move), cycle_length (sweeps in the cycle, or
    None), cycle_start (the sweep after which the cycle's first state was reached), improving (players able
    to improve in the returned state), returned (which rule chose it: "converged", "cycle: " + CYCLE_RULE or
    "max_sweeps: the last state"), potential (additive: the CPM objective sum_C sum_{i<j in C} (phi_ij - tau);
    fractional / average: sum_i u_i, the welfare).
    """
    phi = np.asarray(phi)
    _check(phi, utility, max_size)
    rng = np.random.default_rng(0) if rng is None else rng
    n = phi.shape[0]
    labels = _initial(n, init, max_size)
    sizes = np.bincount(labels, minlength=n).astype(np.float64)
    scale = float(np.max(np.abs(phi))) if n else 0.0
    tol = 1e-12 * max(scale, abs(tau), 1e-300)
    moves: list[int] = []
    converged = False
    seen: dict[bytes, int] = {}  # state -> the sweep count at which it was reached (fixed order only)
    states: list[np.ndarray] = []
    cycle_start = None
    for _ in range(max_sweeps):
        if order is not None:
            key = labels.tobytes()  # exact: the slot ids are the whole state of a fixed-order sweep
            if key in seen:
                cycle_start = seen[key]
                break
            seen[key] = len(states)
            states.append(labels.astype(np.int32 if n < 2**31 else np.int64))
        moved = _sweep(phi, labels, sizes, tau, utility, max_size,
                       rng.permutation(n) if order is None else order, tol)
        moves.append(moved)
        if moved == 0:
            converged = True
            break
    if cycle_start is not None:
        labels, improving = _pick_in_cycle(phi, states[cycle_start:], tau, utility, max_size, tol)
        returned = "cycle: " + CYCLE_RULE
    else:
        improving = 0 if converged else int(improving_players(phi, labels, tau, utility, max_size, tol).size)
        returned = "converged" if converged else "max_sweeps: the last state"
    _, labels = np.unique(labels, return_inverse=True)
    info = {"sweeps": len(moves), "moves": moves, "converged": converged,
            "cycle_length": None if cycle_start is None else len(states) - cycle_start,
            "cycle_start": cycle_start, "improving": improving, "returned": returned,
            "potential": separable_potential(phi, labels, tau, utility)}
    return labels.astype(np.int64), info


def _pick_in_cycle(phi: np.ndarray, cycle: list[np.ndarray], tau: float, utility: str, max_size: int,
                   tol: float) -> tuple[np.ndarray, int]:
    """The state of a cycle that `CYCLE_RULE` picks, and its number of players able to improve."""
    best = None
    for t, lab in enumerate(cycle):
        key = (int(improving_players(phi, lab, tau, utility, max_size, tol).size),
               -separable_potential(phi, lab, tau, utility), t)
        if best is None or key < best[0]:
            best = (key, lab)
    return best[1].astype(np.int64), best[0][0]


def absorb_singletons(
    phi: np.ndarray, labels: np.ndarray, tau: float, utility: str = "fractional", max_size: int = 10,
    rng: np.random.Generator | None = None, max_sweeps: int = 100, order: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Second tier: the players `labels` leaves alone play the same game among themselves at the cost `tau`.

    Why: at the first tier's cost (the 90th percentile) about half of the MNIST neurons end alone, though
    many have partners only a little below it. Lowering tau for everyone lets weak players dilute the
    strong coalitions (held-out Pair falls fast); here the coalitions already formed stay closed, and
    only the players left alone may group, with each other, at the lower cost. Best-response dynamics
    restricted to those players (a move to alone or to a coalition of other such players with room).
    `order`: the turn order over all players (the priority order); those left alone keep their relative order.
    Returns (labels, info) with info: tier-2 players, sweeps, moves, converged, and `best_response`'s cycle
    fields (cycle_length, cycle_start, improving, returned), each prefixed tier2_.
    """
    phi = np.asarray(phi)
    _check(phi, utility, max_size)
    rng = np.random.default_rng(0) if rng is None else rng
    n = phi.shape[0]
    _, lab = np.unique(np.asarray(labels), return_inverse=True)
    lab = lab.astype(np.int64)
    alone = np.flatnonzero(np.bincount(lab)[lab] == 1)
    # a sub-game on the players left alone: slots 0..len(alone)-1, one each
    sub = np.asarray(phi[np.ix_(alone, alone)], dtype=np.float64)
    moves: list[int] = []
    converged = alone.size <= 1  # no one, or one player alone: nothing to move
    cycle = {"cycle_length": None, "cycle_start": None, "improving": 0, "returned": "converged"}
    sub_lab = np.arange(alone.size, dtype=np.int64)
    if alone.size > 1:
        sub_order = None
        if order is not None:  # the same priority among the players left alone
            pos = np.full(n, -1, dtype=np.int64)
            pos[alone] = np.arange(alone.size)
            sub_order = pos[np.asarray(order)]
            sub_order = sub_order[sub_order >= 0]
        sub_lab, inf = best_response(sub, tau, utility, max_size, rng, max_sweeps=max_sweeps, order=sub_order)
        moves, converged = inf["moves"], inf["converged"]
        cycle = {k: inf[k] for k in cycle}
    out = lab.copy()
    out[alone] = lab.max() + 1 + sub_lab if n else sub_lab
    _, out = np.unique(out, return_inverse=True)
    return out.astype(np.int64), {"tier2_players": int(alone.size), "tier2_set": alone, "tier2_sweeps": len(moves),
                                  "tier2_moves": moves, "tier2_converged": bool(converged),
                                  **{f"tier2_{k}": v for k, v in cycle.items()}}


def priority_order(phi: np.ndarray, block: int = 512) -> np.ndarray:
    """Players by decreasing strength (their best partner's symmetrised phi), ties to the smaller id.

    The turn order of the default dynamics: strong players choose first, every sweep, so the
    Nash-stable partition reached depends on phi only, not on a random order. Why: on real valuations
    the fractional game has very many Nash-stable partitions, and random orders land on different ones
    (two runs on the same MiniLM phi agreed at ARI 0.06); a fixed order lands on the same one for two
    nearly equal valuations (split-half ARI 0.05 -> 0.31 there). Computed by square tiles (phi_ij + phi_ji
    needs phi's transpose): no n x n copy, cache-friendly.
    """
    phi = np.asarray(phi)
    n = phi.shape[0]
    strength = np.full(n, -np.inf)
    for a in range(0, n, block):
        b = min(n, a + block)
        for c in range(0, n, block):
            d = min(n, c + block)
            tile = phi[a:b, c:d].astype(np.float64) + phi[c:d, a:b].T  # 2 x the symmetrised phi: same order
            if a == c:
                np.fill_diagonal(tile, -np.inf)  # not its own partner
            strength[a:b] = np.maximum(strength[a:b], tile.max(axis=1))
    if n == 1:
        strength[:] = 0.0
    return np.lexsort((np.arange(n), -strength)).astype(np.int64)


def separable_potential(phi: np.ndarray, labels: np.ndarray, tau: float, utility: str) -> float:
    """Additive: sum_C sum_{i<j in C} (phi_ij - tau) (the potential); otherwise sum_i u_i (the welfare)."""
    labels = np.asarray(labels)
    total = 0.0
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        if group.size < 2:
            continue
        sub = np.asarray(phi[np.ix_(group, group)], dtype=np.float64) - tau
        w = float(sub.sum() - np.trace(sub))  # ordered pairs
        total += w / 2 if utility == "additive" else w / (group.size - (utility == "average"))
    return total


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Coalition ids 0..c-1, largest first, ties by smallest member (deterministic, comparable across runs)."""
    _, inv = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inv)
    first = np.full(sizes.size, labels.size)
    np.minimum.at(first, inv, np.arange(labels.size))
    order = np.lexsort((first, -sizes))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inv].astype(np.int64)
