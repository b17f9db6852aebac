"""Data-parallel valuations: each rank values its shard of the inputs, the statistics are merged exactly.

    torchrun --nproc-per-node 2 -m hedonic_neurons.cli valuations smollm2 --layer 10 --out val/

Every rank loads the model on its own device, runs the forward pass on its contiguous shard of the
inputs, and computes the mergeable statistics of its shard (`valuations.accumulate.ValuationStats`:
activation co-moments for OCA, Delta_ij and psi moments for exact PAS, the Hessian means). The
statistics are all-reduced with the k-way form of Chan's formula and rank 0 turns them into the same
`Valuations` a single process would give (to float rounding) and writes them. Mean ablation needs the
mean activation over ALL inputs, so it is all-reduced before the per-shard coefficients are built.
On one process (no `torchrun`) the same function is the identity on the statistics.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..distributed import Dist, launched, shard_sizes
from ..valuations.accumulate import Moments, ValuationStats
from ..valuations.activations import RunningStats
from .extract import LayerCache, layer_cache, subset_cache
from .targets import batch_lengths, describe_target, draw_samples, model_target, text_lengths
from .valuate import (
    METHODS,
    Valuations,
    _as_batches,
    compute_valuations,
    target_inputs,
    valuation_options,
)

log = logging.getLogger(__name__)

__all__ = ["stats_from_cache", "reduce_stats", "valuations_from_stats", "shard_inputs", "distributed_valuations",
           "valuations_any", "sharded_half_valuations", "HalfValuations"]


# ---------------------------------------------------------------------------------------------------
# per-shard statistics and their finalisation
# ---------------------------------------------------------------------------------------------------


def _quiet_single_input(N: int):
    """A 1-input shard has no standard errors of its own (its M2 is 0): do not warn about it."""
    import contextlib

    if N > 1:
        return contextlib.nullcontext()
    pas_log = logging.getLogger("hedonic_neurons.valuations.pas")

    @contextlib.contextmanager
    def cm():
        old = pas_log.level
        pas_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            pas_log.setLevel(old)
    return cm()


def _agreement_pairs(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The random pair subset of `valuations_from_cache` (seed 0), the same on every rank."""
    rng = np.random.default_rng(0)
    m = min(m, n * (n - 1) // 2)
    i = rng.integers(0, n, size=m)
    j = (i + rng.integers(1, n, size=m)) % n
    pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def stats_from_cache(
    cache: LayerCache,
    methods: Sequence[str] = METHODS,
    *,
    pas_dtype: Any = np.float64,
    n_total: int | None = None,
    max_direct_cost: float = 2e10,
    agreement_pairs: int = 2_000,
    progress: bool = False,
) -> tuple[ValuationStats, dict[str, float]]:
    """The mergeable statistics of a (shard's) layer cache and the seconds each method took.

    ``n_total``: the number of inputs over all shards (decides, identically on every rank, whether a
    non-norm tail's exact PAS is affordable on all pairs); defaults to this cache's.
    """
    from ..valuations.pas import exact_pas, hessian_pas
    from ..valuations.postnorm import PostNormTail, exact_pas_postnorm
    from ..valuations.tail import NormTail
    from .valuate import exact_pas_pairs, exact_singles

    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown valuation method(s) {bad or methods}: use any of {METHODS}")
    n, N = cache.n_players, cache.n_samples
    n_total = N if n_total is None else int(n_total)
    norm_tail = isinstance(cache.tail, NormTail)
    post_tail = isinstance(cache.tail, PostNormTail)  # closed form too (as in valuations_from_cache)
    st = ValuationStats(n, meta={"layer": cache.layer, "site": cache.site, "ablation": cache.ablation,
                                 "tail": cache.tail.kind if norm_tail else repr(cache.tail),
                                 "pas_dtype": np.dtype(pas_dtype).name, "acts_dtype": str(cache.acts.dtype),
                                 **dict(cache.meta)})
    times: dict[str, float] = {}
    kw = cache.math_kwargs()
    if "oca" in methods:
        t = time.perf_counter()
        st.oca = RunningStats(n).update(cache.acts)
        times["oca"] = time.perf_counter() - t
    if "pas" in methods:
        t = time.perf_counter()
        with _quiet_single_input(N):
            if norm_tail or post_tail:
                res = (exact_pas if norm_tail else exact_pas_postnorm)(**kw, dtype=pas_dtype, progress=progress)
                st.pas = Moments.from_mean_se(N, res.phi, res.se)
                st.psi = Moments.from_mean_se(N, res.psi, res.psi_se)
                st.logit = Moments(N, np.array([res.logit_mean]))
            else:
                st.psi = Moments.from_mean_se(N, *exact_singles(cache))
                if n * (n - 1) // 2 * n_total * cache.H.shape[1] ** 2 <= max_direct_cost:
                    (pi, pj), vals, ses = exact_pas_pairs(cache, progress=progress)
                    phi, se = np.zeros((n, n)), np.zeros((n, n))
                    phi[pi, pj] = phi[pj, pi] = vals
                    se[pi, pj] = se[pj, pi] = ses
                    st.pas = Moments.from_mean_se(N, phi, se)
                elif "hessian" in methods and n >= 3:
                    pairs = _agreement_pairs(n, agreement_pairs)
                    _, vals, ses = exact_pas_pairs(cache, pairs)
                    st.pas = Moments.from_mean_se(N, vals, ses)
                    st.pairs = np.stack(pairs)
        times["pas_exact"] = time.perf_counter() - t
    if "hessian" in methods:
        t = time.perf_counter()
        if norm_tail:
            h = hessian_pas(**kw, dtype=pas_dtype, progress=progress)
        else:
            h = hessian_pas(kw["H"], kw["coef"], kw["C"], cache.tail.logit_torch, kw["targets"],
                            C_base=kw.get("C_base"), coef_base=kw.get("coef_base"), dtype=pas_dtype, progress=progress)
        st.hessian = Moments(N, np.asarray(h, dtype=np.float64))
        times["pas_hessian"] = time.perf_counter() - t
    return st, times


def reduce_stats(stats: ValuationStats, dist: Dist) -> ValuationStats:
    """All-reduce the statistics of every rank's shard into those of all inputs (k-way Chan merge).

    mean = sum_k n_k m_k / N and M2 = sum_k [M2_k + n_k (m_k - mean)^2] (outer products for the
    activation co-moments): two sums per statistic, no gather of per-rank copies.
    """
    if dist.world == 1:
        return stats
    out = ValuationStats(stats.n_players, pairs=stats.pairs, meta=dict(stats.meta))

    def moments(m: Moments) -> Moments:
        N = dist.allreduce_int(m.count)
        mean = dist.allreduce_sum(m.mean * (m.count / N)) if m.count else dist.allreduce_sum(np.zeros_like(m.mean))
        m2 = None
        if m.m2 is not None:
            m2 = dist.allreduce_sum(m.m2 + m.count * (m.mean - mean) ** 2)
        return Moments(N, mean, m2)

    if stats.oca is not None:
        rs = stats.oca
        N = dist.allreduce_int(rs.count)
        mean = dist.allreduce_sum(rs._mean * (rs.count / N))
        d = rs._mean - mean
        m2 = rs._m2 + np.outer(d, d) * rs.count
        red = RunningStats(rs.n)
        red._count, red._mean, red._m2 = N, mean, dist.allreduce_sum(m2)
        out.oca = red
    for name in ValuationStats._MOMENTS:
        m = getattr(stats, name)
        if m is not None:
            setattr(out, name, moments(m))
    return out


def valuations_from_stats(stats: ValuationStats, *, W_oca: np.ndarray | None, layer: int, site: str,
                          ablation: str, timings: dict[str, float] | None = None,
                          meta: dict | None = None) -> Valuations:
    """The `Valuations` (OCA, exact PAS + se + psi, Hessian PAS, agreement) of merged statistics; `W_oca`: OCA's
    weight term, the cache's `W_oca` (W_down at an MLP site, the adapter's residual_readers or None)."""
    from ..valuations.agreement import agreement
    from ..valuations.oca import oca_null_se

    n, N = stats.n_players, stats.n_samples
    if N < 2:
        raise ValueError(f"{N} input(s): valuations are expectations over inputs; give at least 2")
    v = Valuations(layer=layer, site=site, ablation=ablation, n_samples=N, n_players=n,
                   timings=dict(timings or {}), meta={**stats.meta, **(meta or {})})
    for k in ("layer", "site", "ablation", "pas_dtype", "acts_dtype"):
        v.meta.pop(k, None)
    if stats.oca is not None:
        acts_dt = np.dtype(stats.meta.get("acts_dtype", "float64"))
        v.phi_oca = stats.oca_phi(W_oca,
                                  dtype=np.float64 if acts_dt == np.float64 else np.float32)
        v.oca_null_se = oca_null_se(N)
    if stats.psi is not None:
        v.psi, v.psi_se = stats.psi.mean.copy(), stats.psi.se
    if stats.pas is not None and stats.pairs is None:
        res = stats.pas_result()
        v.phi_pas, v.pas_se = res.phi, res.se
        if stats.logit is not None:
            v.meta["logit_mean"] = res.logit_mean
    if stats.hessian is not None:
        v.phi_hessian = stats.hessian_phi()
    if v.phi_hessian is not None and n >= 3:
        t = time.perf_counter()
        if v.phi_pas is not None:
            v.agreement = agreement(v.phi_hessian, v.phi_pas)
        elif stats.pairs is not None:
            pi, pj = stats.pairs
            exact = np.zeros((n, n))
            exact[pi, pj] = exact[pj, pi] = stats.pas.mean
            v.agreement = agreement(v.phi_hessian, exact, pairs=(pi, pj))
            v.agreement["subset"] = "random pairs (exact PAS of a non-norm tail on all pairs is too costly)"
        v.timings["agreement"] = time.perf_counter() - t
    return v


# ---------------------------------------------------------------------------------------------------
# sharding the inputs
# ---------------------------------------------------------------------------------------------------


def _batch_rows(batch: Any) -> int:
    if isinstance(batch, Mapping):
        for k, v in batch.items():
            if k not in ("index",) and isinstance(v, torch.Tensor) and v.ndim >= 1:
                return int(v.shape[0])
        raise ValueError("a batch dict holds no tensor: give dicts of model inputs (e.g. from text_batches)")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return int(len(batch[0]))
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(len(batch))
    raise ValueError(f"cannot shard a batch of type {type(batch).__name__}: give texts, an array, or dicts of "
                     "model inputs")


def _batch_take(batch: Any, rows: slice) -> Any:
    if isinstance(batch, Mapping):
        n = _batch_rows(batch)
        return {k: (v[rows] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
                for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return (batch[0][rows], batch[1][rows])
    return batch[rows]


def _n_inputs(inputs: Any) -> int:
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return int(len(inputs))
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return len(inputs)
    return sum(_batch_rows(b) for b in inputs)


def shard_inputs(inputs: Any, targets: Sequence[int] | None, lo: int, hi: int) -> tuple[Any, Any]:
    """Inputs [lo, hi) in the order given (texts, array rows, or rows of ready batches, batches kept)."""
    if isinstance(inputs, str):
        raise ValueError("inputs is one string: pass a list of texts")
    tg = None if targets is None else np.asarray(targets)[lo:hi]
    if isinstance(inputs, (np.ndarray, torch.Tensor)) or (
            isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
        return inputs[lo:hi], tg
    out, start = [], 0
    for b in inputs:
        r = _batch_rows(b)
        a, z = max(lo, start), min(hi, start + r)
        if a < z:
            out.append(_batch_take(b, slice(a - start, z - start)))
        start += r
    return out, tg


# ---------------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------------


def _global_mean_coef(cache: LayerCache, dist: Dist) -> None:
    """Mean ablation over ALL inputs: replace the shard-mean coefficients by the all-inputs ones."""
    X = cache.acts if cache.site == "mlp" else cache.H
    N = dist.allreduce_int(X.shape[0])
    mean = dist.allreduce_sum(X.sum(0, dtype=np.float64)) / N
    cache.coef = X - mean.astype(X.dtype)[None]


def distributed_valuations(
    model: nn.Module | str | Path,
    inputs: Any,
    layer: int,
    *,
    sizes: list[int] | None = None,
    load_kwargs: dict | None = None,
    dist: Dist | None = None,
    **options: Any,
) -> Valuations | None:
    """`compute_valuations` over the ranks of a `torchrun` launch: rank 0 returns the Valuations, others None.

    Each rank takes a contiguous shard of `inputs` (as even as possible, or `sizes` inputs per rank),
    loads the model on its own device (``cuda:LOCAL_RANK`` for ``device="cuda"``), and the statistics
    are merged exactly (`reduce_stats`). Outside a launch it runs on one process, through the same path.
    `options`: the keywords of `compute_valuations` (its signature is their one declaration), e.g. ``verify``:
    rank 0 checks the valuations of its own shard against direct ablation through the model's modules (the
    merged statistics are built by the same machinery).
    """
    o = SimpleNamespace(**valuation_options(**options))
    o.progress = o.progress and not os.environ.get("TQDM_DISABLE")
    own = dist is None
    dist = Dist(o.device) if own else dist
    # checked before joining the group: every rank raises the same one-line error, none waits for the others
    if isinstance(inputs, str):
        raise ValueError("inputs is one string: pass a list of texts")
    if not isinstance(inputs, (list, tuple, np.ndarray, torch.Tensor)):
        inputs = list(inputs)
    N = _n_inputs(inputs)
    if N < 2:
        raise ValueError(f"{N} input(s): valuations are expectations over inputs; give at least 2")
    sz = shard_sizes(N, dist.world, sizes)
    if dist.world > 1 and (load_kwargs or {}).get("device_map") is not None:
        raise ValueError("--device-map with several processes would map every rank's copy over the same devices: "
                         "use either torchrun (data-parallel, one device per rank) or --device-map (one process)")
    try:
        if own:
            dist.__enter__()
        lo = sum(sz[:dist.rank])
        if o.targets is not None and o.labels is not None:
            raise ValueError("labels and targets are the same thing: pass labels only")
        labels = o.labels if o.labels is not None else o.targets
        shard, tg = shard_inputs(inputs, labels, lo, lo + sz[dist.rank])
        if isinstance(model, (str, Path)):
            from .loading import load_model

            model, tok = load_model(model, dtype=o.dtype, check=o.adapter is None, target=o.target,
                                    allow_new_head=o.allow_new_head, labels_given=o.labels is not None,
                                    **(load_kwargs or {}))
            o.tokenizer = o.tokenizer or tok
            if not getattr(model, "hf_device_map", None):
                model = model.to(dist.device)
        dev = dist.device
        hf_map = getattr(model, "hf_device_map", None) or getattr(getattr(model, "base_model", None),
                                                                 "hf_device_map", None)
        if hf_map:
            dev = _first_device(model)
        if o.adapter is not None:
            from .detect import use_adapter

            use_adapter(model, o.adapter)
        # next-token: ONE draw over all inputs (it depends on their lengths only), each rank keeps its texts'
        # samples, so the merged valuations equal one process's
        mine = None
        if model_target(model, o.target, labels_given=tg is not None) == "next-token":
            texts = isinstance(inputs, (list, tuple)) and isinstance(inputs[0], str)
            if texts and o.tokenizer is None:
                raise ValueError("text inputs need a tokenizer: pass tokenizer=..., or give the model as a name/path")
            lengths = (text_lengths(o.tokenizer, inputs, o.max_length) if texts else
                       batch_lengths(_as_batches(inputs, None, batch_size=o.batch_size, max_length=o.max_length,
                                                 targets=None)))
            drawn = draw_samples(lengths, o.positions, o.max_samples, o.seed)
            if texts or not any(isinstance(b, dict) and b.get("index") is not None for b in shard):
                mine = [(t - lo, p) for t, p in drawn if lo <= t < lo + sz[dist.rank]]
            else:  # batches sorted by length carry the inputs' own positions: the shard keeps those ids
                own = {int(i) for b in shard for i in torch.as_tensor(b["index"]).reshape(-1)}
                mine = [(t, p) for t, p in drawn if t in own]
            if not mine:
                raise ValueError(f"rank {dist.rank} drew no next-token sample from its {sz[dist.rank]} inputs: "
                                 "raise --max-samples or launch fewer processes")
        batches, kind, n_texts = target_inputs(model, shard, tokenizer=o.tokenizer, target=o.target,
                                               positions=o.positions, max_samples=o.max_samples, seed=o.seed,
                                               labels=tg, batch_size=o.batch_size, max_length=o.max_length,
                                               device=dev, samples=mine)
        if o.verify and not isinstance(batches, (list, tuple)):
            batches = list(batches)  # self-verification re-runs a few of them
        t = time.perf_counter()
        cache = layer_cache(model, batches, layer, site=o.site, ablation=o.ablation, device=dev, dtype=o.dtype,
                            progress=o.progress and dist.is_main)
        timings = {"forward": time.perf_counter() - t}
        if cache.ablation == "mean":
            _global_mean_coef(cache, dist)
        st, times = stats_from_cache(cache, o.methods, pas_dtype=o.pas_dtype, n_total=N,
                                     progress=o.progress and dist.is_main)
        timings.update(times)
        if o.verify and dist.is_main:
            # rank 0 checks its own shard: the valuations of its inputs alone against direct ablation
            # through the model's modules (the merged statistics come from the same cache machinery)
            from .verify import verify_valuations

            t = time.perf_counter()
            local = valuations_from_stats(st, W_oca=cache.W_oca, layer=cache.layer, site=cache.site,
                                          ablation=cache.ablation, timings={}, meta={})
            local.cache = cache
            verify_valuations(model, batches, local, device=dev)
            local.timings["verify"] = time.perf_counter() - t
        t = time.perf_counter()
        merged = reduce_stats(st, dist)
        timings["reduce"] = time.perf_counter() - t
        if not dist.is_main:
            return None
        v = valuations_from_stats(merged, W_oca=cache.W_oca, layer=cache.layer, site=cache.site,
                                  ablation=cache.ablation, timings=timings,
                                  meta={"world_size": dist.world, "shard_sizes": sz, "backend": dist.backend
                                        if dist.world > 1 else None})
        v.meta["target"] = describe_target(model, kind, positions=o.positions, n_samples=v.n_samples,
                                           max_samples=o.max_samples, seed=o.seed,
                                           n_texts=N if n_texts and kind != "next-token" else None)
        if o.verify:
            v.verification = local.verification
            v.timings["verify"] = local.timings["verify"]
        else:
            v.meta["verification"] = "skipped (verify=False / --no-verify)"
        return v
    finally:
        if own:
            dist.__exit__(None, None, None)


def _first_device(model: nn.Module) -> torch.device:
    """Where the inputs of a model dispatched with a device_map go: its first parameter's device."""
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def valuations_any(model: nn.Module | str | Path, inputs: Any, layer: int, **kw: Any) -> Valuations | None:
    """`compute_valuations` on one process, `distributed_valuations` inside a `torchrun` launch."""
    if launched():
        return distributed_valuations(model, inputs, layer, **kw)
    kw.pop("sizes", None)
    load_kwargs = kw.pop("load_kwargs", None)
    if load_kwargs and isinstance(model, (str, Path)):
        from .loading import load_model

        model, tok = load_model(model, dtype=kw.get("dtype", torch.float32), target=kw.get("target"),
                                allow_new_head=kw.get("allow_new_head", False),
                                labels_given=kw.get("labels") is not None, **load_kwargs)
        kw["tokenizer"] = kw.get("tokenizer") or tok
    return compute_valuations(model, inputs, layer, **kw)


# ---------------------------------------------------------------------------------------------------
# cross-fitted valuations of several halves of one input list (the reranker's valuation stage)
# ---------------------------------------------------------------------------------------------------


@dataclass
class HalfValuations:
    """What rank 0 gets back from `sharded_half_valuations` (the other ranks get None).

    ``mats[h]``: phi_oca, oca_se, phi_pas, [pas_se], psi, [psi_se] of half h (the reranker's per-half keys);
    ``info[h]``: how PAS was made (exact / Hessian + agreement), timings; ``acts``: the readout activations
    of every input, in input order (gathered from the ranks); ``other_acts``: the same for each extra input
    list; ``W_down``, ``n_samples``, ``n_players``, ``ablation`` as in a `LayerCache` of all inputs.
    """

    mats: dict[str, dict[str, np.ndarray]]
    info: dict[str, dict[str, Any]]
    acts: np.ndarray
    other_acts: list[np.ndarray]
    W_down: np.ndarray | None
    ablation: str
    shard_sizes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.acts.shape[0])

    @property
    def n_players(self) -> int:
        return int(self.acts.shape[1])


def _shards(halves: Mapping[str, np.ndarray], n_other: Sequence[int], world: int,
            sizes: Mapping[str, list[int]] | None) -> tuple[dict[str, list[int]], list[list[int]]]:
    """Contiguous shard sizes of every half and of every extra list; one-line error naming the half."""
    out = {}
    for h, ix in halves.items():
        try:
            out[h] = shard_sizes(len(ix), world, None if sizes is None else sizes.get(h))
        except ValueError as exc:
            raise ValueError(f"half {h}: {exc}") from None
    others = []
    for k, n in enumerate(n_other):
        try:
            others.append(shard_sizes(n, world))
        except ValueError as exc:
            raise ValueError(f"extra input list {k}: {exc}") from None
    return out, others


def sharded_half_valuations(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    halves: Mapping[str, np.ndarray],
    layer: int,
    *,
    dist: Dist,
    other_texts: Sequence[Sequence[str]] = (),
    batch_size: int = 16,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    direct_pas_limit: float = 20_000_000,
    agreement_pairs: int = 1_000,
    verify_half: str | None = None,
    verify_dir: str | Path | None = None,
    verify_stem: str = "",
    sizes: Mapping[str, list[int]] | None = None,
    progress: bool = False,
) -> HalfValuations | None:
    """OCA and PAS of each half of `texts` (disjoint index arrays), sharded over the ranks of `dist`.

    The reranker's valuation stage on N processes: every rank takes a contiguous shard of every half (and
    of every list in `other_texts`), runs one forward pass over its shards, and computes the mergeable
    statistics of each half's shard (`stats_from_cache`); they are all-reduced (`reduce_stats`, exact)
    and rank 0 turns them into the matrices one process gives. PAS as the reranker chooses it: exact
    (+ se, psi, psi_se) for a norm tail or when pairs x inputs <= `direct_pas_limit`; otherwise the
    Hessian PAS (a mean over inputs, merged as one), psi by direct evaluation, and exact PAS on
    `agreement_pairs` random pairs (seed 0, the reranker's draw) for its agreement. OCA is computed on
    rank 0 from the gathered activations (rank 0 needs them anyway, and an (N, n) gather is smaller than
    the (n, n) co-moments when N < n): the same float32 computation as one process. ``verify_half``: rank 0
    self-verifies its shard of that half against direct ablation (models.verify), written to
    `verify_dir`/`verify_stem`. ``sizes``: {half: shard sizes} instead of the even split (tests).
    One process (`dist.world == 1`) runs the same path. Returns `HalfValuations` on rank 0, None elsewhere.
    """
    from ..valuations.oca import oca, oca_se
    from ..valuations.pas import hessian_pas
    from ..valuations.tail import NormTail
    from .extract import text_batches
    from .valuate import exact_pas_pairs, exact_singles

    halves = {h: np.asarray(ix, dtype=np.int64) for h, ix in halves.items()}
    world, rank = dist.world, dist.rank
    sz, osz = _shards(halves, [len(t) for t in other_texts], world, sizes)
    lo = {h: sum(s[:rank]) for h, s in sz.items()}
    mine = {h: halves[h][lo[h]:lo[h] + sz[h][rank]] for h in halves}  # this rank's inputs of each half
    order = np.concatenate([mine[h] for h in halves])
    local, start = {}, 0
    for h in halves:  # rows of each half inside this rank's cache
        local[h] = np.arange(start, start + mine[h].size)
        start += mine[h].size
    prog = progress and dist.is_main
    t = time.perf_counter()
    cache = layer_cache(model, text_batches(tokenizer, [texts[i] for i in order], batch_size=batch_size,
                                            max_length=max_length), layer, device=device, progress=prog)
    t_forward = time.perf_counter() - t
    acts = dist.gather_rows(cache.acts, order, len(texts))
    other_acts = []
    for k, ot in enumerate(other_texts):
        a = sum(osz[k][:rank])
        rows = np.arange(a, a + osz[k][rank])
        oc = layer_cache(model, text_batches(tokenizer, [ot[i] for i in rows], batch_size=batch_size,
                                             max_length=max_length), layer, device=device, progress=prog)
        other_acts.append(dist.gather_rows(oc.acts, rows, len(ot)))
    n = cache.n_players
    mats: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict[str, Any]] = {}
    for h, ix in halves.items():
        N_h = int(ix.size)
        sub = subset_cache(cache, local[h])
        timings: dict[str, float] = {"forward (rank 0, all halves)": t_forward}
        hi: dict[str, Any] = {}
        exact = isinstance(cache.tail, NormTail) or n * (n - 1) // 2 * N_h <= direct_pas_limit
        t = time.perf_counter()
        if exact:
            st, times = stats_from_cache(sub, ("pas",), n_total=N_h, max_direct_cost=float("inf"), progress=prog)
            timings.update(times)
            hi["pas"] = "exact"
        else:
            # the reranker's Hessian path: Hessian PAS, psi, and exact PAS on its random pairs (with duplicates,
            # as drawn) for the agreement; each one a mean over inputs, so merged exactly
            st = ValuationStats(n, meta={"layer": sub.layer, "site": sub.site, "ablation": sub.ablation})
            kw = sub.math_kwargs()
            with _quiet_single_input(sub.n_samples):
                st.hessian = Moments(sub.n_samples, np.asarray(hessian_pas(
                    kw["H"], kw["coef"], kw["C"], sub.tail.logit_torch, None, C_base=kw.get("C_base"),
                    coef_base=kw.get("coef_base"), progress=prog), dtype=np.float64))
                st.psi = Moments.from_mean_se(sub.n_samples, *exact_singles(sub))
                rng = np.random.default_rng(0)
                m = min(agreement_pairs, n * (n - 1) // 2)
                i = rng.integers(0, n, size=m)
                j = (i + rng.integers(1, n, size=m)) % n
                pairs, vals, ses = exact_pas_pairs(sub, (np.minimum(i, j), np.maximum(i, j)), progress=False)
                st.pas, st.pairs = Moments.from_mean_se(sub.n_samples, vals, ses), pairs
            timings["pas_hessian"] = time.perf_counter() - t
        t = time.perf_counter()
        red = reduce_stats(st, dist)
        timings["reduce"] = time.perf_counter() - t
        if verify_half == h and dist.is_main:
            hi["verify_seconds"], hi["verify_shard"] = _verify_shard(
                model, tokenizer, [texts[i] for i in mine[h]], sub, st, exact, batch_size=batch_size,
                max_length=max_length, device=device, out=verify_dir, stem=verify_stem)
        if not dist.is_main:
            continue
        t = time.perf_counter()
        m_h = {"phi_oca": oca(acts[ix], cache.W_down if cache.site == "mlp" else None),
               "oca_se": np.asarray(oca_se(cache.W_down, N_h))}
        timings["oca"] = time.perf_counter() - t
        if exact:
            res = red.pas_result()
            m_h.update(phi_pas=res.phi, psi=res.psi, pas_se=res.se, psi_se=res.psi_se)
        else:
            phi = red.hessian.mean.copy()
            pi, pj = red.pairs
            vals, hv = red.pas.mean, phi[pi, pj]
            corr = float(np.corrcoef(vals, hv)[0, 1]) if vals.std() > 0 and hv.std() > 0 else float("nan")
            m_h.update(phi_pas=phi, psi=red.psi.mean.copy(), psi_se=red.psi.se)
            hi.update(pas="hessian (exact agreement on random pairs)", agreement_pairs=int(pi.size),
                      agreement_pearson=corr, hessian_seconds=round(timings["pas_hessian"], 2))
            log.info("layer %s half %s: Hessian PAS vs exact on %d random pairs: Pearson %.4f", layer, h, pi.size,
                     corr)
        hi["timings"] = timings
        mats[h], info[h] = m_h, hi
    if not dist.is_main:
        return None
    return HalfValuations(mats, info, acts, other_acts, cache.W_down, cache.ablation,
                          {**sz, **{f"other{k}": s for k, s in enumerate(osz)}})


def _verify_shard(model, tokenizer, texts, sub, st, exact, *, batch_size, max_length, device, out, stem):
    """Rank 0's self-verification of its shard of a half (its inputs alone) against direct ablation."""
    from .extract import text_batches
    from .verify import save_verification, verify_valuations

    if sub.n_samples < 2:  # a 1-input shard has no valuations of its own to verify
        return 0.0, "skipped: rank 0 holds one input of this half"
    t = time.perf_counter()
    v = Valuations(layer=sub.layer, site=sub.site, ablation=sub.ablation, n_samples=sub.n_samples,
                   n_players=sub.n_players, cache=sub)
    v.psi = st.psi.mean
    if exact:
        v.phi_pas = st.pas_result().phi
    # the cache was built from these texts in this order, batched as here
    res = verify_valuations(model, text_batches(tokenizer, texts, batch_size=batch_size, max_length=max_length),
                            v, device=device)
    if out is not None:
        save_verification(res, out, stem=stem)
    return round(time.perf_counter() - t, 2), f"rank 0's {sub.n_samples} inputs of this half"
