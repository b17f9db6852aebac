"""Top Covering on choice graphs: classic (explicit choice sets) and PAC-Top-Cover (Algorithm 1).

Both share one graph routine: players point to their choice sets, sink strongly connected
components are emitted as coalitions and removed, and the rest repeats (paper section 3.3,
appendix C). A sink SCC has no edge leaving it, so Algorithm 1's closure check (line 19) always
holds (nothing outside it is chosen by its members): all sink SCCs of a round are disjoint and may be emitted together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from hedonic_neurons.game.samplers import CoalitionSampler
from hedonic_neurons.game.utility import Game, member_utilities

log = logging.getLogger(__name__)

EMIT_MODES = ("all", "one")


def sink_components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> list[np.ndarray]:
    """Sink SCCs of the digraph on nodes 0..n_nodes-1 with edges src -> dst (scipy SCCs)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    graph = csr_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes))
    n_comp, comp = connected_components(graph, directed=True, connection="strong")
    leaves = np.zeros(n_comp, dtype=bool)
    leaves[comp[src][comp[src] != comp[dst]]] = True
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    groups = np.split(order, bounds)
    return [g for g in groups if not leaves[comp[g[0]]]]


def _pick(sinks: list[np.ndarray], emit: str) -> list[np.ndarray]:
    if emit == "all":
        return sinks
    # Algorithm 1 line 20: the smallest sink, ties by its lexicographic member list
    return [min(sinks, key=lambda g: (g.size, tuple(np.sort(g))))]


def emit_round(remaining: np.ndarray, choice: np.ndarray, emit: str = "all") -> list[np.ndarray]:
    """One round of Top Covering: sink SCCs of the graph i -> choice[i] over `remaining` players.

    `choice` is (|remaining|, k) global player ids (-1 = none; a player with no choice points to
    itself, a degenerate self-loop). Returns the emitted coalitions as global ids.
    """
    remaining = np.asarray(remaining, dtype=np.int64)
    r = remaining.size
    local = np.full(int(remaining.max()) + 1 if r else 1, -1, dtype=np.int64)
    local[remaining] = np.arange(r)
    rows = np.repeat(np.arange(r), choice.shape[1])
    targets = choice.ravel()
    keep = targets >= 0
    tl = local[np.where(keep, targets, 0)]
    keep &= tl >= 0  # partners outside the remaining set carry no edge
    sinks = sink_components(r, rows[keep], tl[keep])
    return [np.sort(remaining[g]) for g in _pick(sinks, emit)]


def top_covering(
    choice_sets: Mapping[int, Iterable[int]] | Sequence[Iterable[int]] | Callable[[int, np.ndarray], Iterable[int]],
    n: int | None = None,
    emit: str = "all",
) -> np.ndarray:
    """Classic Top Covering on explicit choice sets; returns labels (one id per coalition).

    `choice_sets[i]` is player i's top choice set (i itself may be listed or not), restricted to the
    remaining players each round; or a callable `(i, remaining) -> choice set` for games whose choice
    sets within a subset are not simply the restriction.
    """
    if emit not in EMIT_MODES:
        raise ValueError(f"emit must be one of {EMIT_MODES}, got {emit!r}")
    if callable(choice_sets):
        if n is None:
            raise ValueError("top_covering with a callable needs the number of players n")
        choose = choice_sets
    else:
        items = dict(choice_sets) if isinstance(choice_sets, Mapping) else dict(enumerate(choice_sets))
        n = len(items) if n is None else n
        if sorted(items) != list(range(n)):
            raise ValueError(f"choice sets must be given for players 0..{n - 1}, got keys {sorted(items)[:10]}...")
        fixed = {i: np.asarray(sorted(set(map(int, c))), dtype=np.int64) for i, c in items.items()}

        def choose(i: int, remaining: np.ndarray) -> np.ndarray:
            return fixed[i][np.isin(fixed[i], remaining)]

    labels = np.full(n, -1, dtype=np.int64)
    remaining = np.arange(n)
    next_id = 0
    while remaining.size:
        sets = [np.asarray([j for j in choose(int(i), remaining) if j != i], dtype=np.int64)
                for i in remaining]
        width = max(1, max(s.size for s in sets))
        choice = np.full((remaining.size, width), -1, dtype=np.int64)
        for row, s in enumerate(sets):
            choice[row, : s.size] = s
        for coalition in emit_round(remaining, choice, emit):
            labels[coalition] = next_id
            next_id += 1
        remaining = np.flatnonzero(labels < 0)
    return labels


def best_choices(game: Game, samples: np.ndarray, remaining: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T*_i and B_i for every remaining player from one round's samples (eq. 2-3).

    Ties between sampled coalitions of equal utility go to the smaller coalition (a top-responsive
    player prefers the smaller of two coalitions with the same choice set), then to the earlier
    sample. Returns (choice (|R|, k) global ids, covered (|R|,) bool).
    """
    util, choice = member_utilities(game, samples)
    size = (samples >= 0).sum(axis=1)
    M, s = samples.shape
    players = samples.ravel()
    valid = players >= 0
    flat_u = util.ravel()[valid]
    flat_p = players[valid]
    flat_size = np.repeat(size, s)[valid]
    flat_t = np.repeat(np.arange(M), s)[valid]
    flat_slot = np.flatnonzero(valid)
    order = np.lexsort((flat_t, flat_size, -flat_u, flat_p))
    first = np.ones(order.size, dtype=bool)
    first[1:] = flat_p[order][1:] != flat_p[order][:-1]
    best = order[first]
    best_player = flat_p[best]
    pos = np.searchsorted(remaining, best_player)
    out = np.full((remaining.size, game.k), -1, dtype=np.int64)
    covered = np.zeros(remaining.size, dtype=bool)
    out[pos] = choice.reshape(M * s, game.k)[flat_slot[best]]
    covered[pos] = True
    return out, covered


def pac_top_cover(
    game: Game,
    sampler: CoalitionSampler,
    m: int,
    omega: int,
    rng: np.random.Generator,
    emit: str = "all",
    cover_all: bool = True,
    progress: bool = False,
    graphs: list | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """PAC-Top-Cover (Algorithm 1). Returns labels and a per-round trace.

    A reservoir of `m` sampled coalitions is consumed `omega` at a time, keeping only sets inside the
    remaining players R and refreshing when short. With `cover_all`, players that no sample of the
    round contains get fresh samples seeded at them instead of the pseudocode's self-loop (which would
    emit them as singletons only because the reservoir went stale). If `graphs` is a list, each
    round's (remaining, choice sets, emitted coalitions) is appended to it, for inspection.
    """
    if emit not in EMIT_MODES:
        raise ValueError(f"emit must be one of {EMIT_MODES}, got {emit!r}")
    n = game.n
    labels = np.full(n, -1, dtype=np.int64)
    in_r = np.ones(n, dtype=bool)
    remaining = np.arange(n)
    reservoir = sampler.sample(m, remaining, rng)
    alive = np.ones(reservoir.shape[0], dtype=bool)
    trace: list[dict] = []
    next_id = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="PAC-Top-Cover", unit="player", leave=False)
    while remaining.size:
        refreshed = 0
        safe = np.where(reservoir >= 0, reservoir, 0)
        inside = alive & np.all((reservoir < 0) | in_r[safe], axis=1)
        idx = np.flatnonzero(inside)[:omega]
        alive[idx] = False
        round_samples = reservoir[idx]
        if idx.size < omega:
            fresh = sampler.sample(m, remaining, rng)
            refreshed = fresh.shape[0]
            take = omega - idx.size
            round_samples = np.concatenate([round_samples, fresh[:take]])
            keep = alive.copy()
            reservoir = np.concatenate([reservoir[keep], fresh[take:]])
            alive = np.ones(reservoir.shape[0], dtype=bool)
        choice, covered = best_choices(game, round_samples, remaining)
        topped_up = 0
        if cover_all and not covered.all():
            seeds = remaining[~covered]
            extra = sampler.sample(seeds.size, remaining, rng, seeds=seeds)
            topped_up = int(seeds.size)
            both = np.concatenate([round_samples, extra])
            choice, covered = best_choices(game, both, remaining)
        coalitions = emit_round(remaining, choice, emit)
        if graphs is not None:
            graphs.append((remaining.copy(), choice.copy(), [c.copy() for c in coalitions]))
        for c in coalitions:
            labels[c] = next_id
            in_r[c] = False
            next_id += 1
        sizes = np.bincount([c.size for c in coalitions])
        trace.append({
            "round": len(trace), "remaining": int(remaining.size), "samples": int(round_samples.shape[0]),
            "refreshed": int(refreshed), "topped_up": topped_up, "uncovered": int((~covered).sum()),
            "emitted": len(coalitions), "emitted_players": int(sum(c.size for c in coalitions)),
            "size_histogram": {int(s): int(c) for s, c in enumerate(sizes) if c},
        })
        if bar is not None:
            bar.update(trace[-1]["emitted_players"])
        remaining = np.flatnonzero(in_r)
    if bar is not None:
        bar.close()
    return labels, trace
