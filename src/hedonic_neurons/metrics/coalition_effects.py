"""What ablating a coalition does to the local logit, per coalition, from exact ablations on a layer cache.

For each coalition C of a partition, on the cache's samples (the held-out half when cross-fitting):
Pair(C) (paper eq. 8: the mean over ordered pairs i != j of Delta_ij = l - l_-i - l_-j + l_-ij, eq. 7),
the joint effect l - l_-C, the sum of the single effects psi(i) = l - l_-i (eq. 6) and their difference,
each with a confidence interval over the samples. All ablations are exact: l_-S(x) = tail(H(x) - sum_{i in S}
delta_i(x)) on the cached residual (the model is not re-run). For a norm + linear tail (`NormTail`) every
l_-S depends on S only through per-player scalars and a Gram matrix of the members' write directions, so
hundreds of coalitions over thousands of samples cost O(N k^2) each; any other tail is evaluated directly,
batched over subsets and samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from hedonic_neurons.valuations.pas import _finv_sqrt_diff, _prepare
from hedonic_neurons.valuations.tail import NormTail

__all__ = ["coalition_effects", "best_jaccard", "mean_ci"]

# float64 elements of one (N, B, k, k) block of coalitions: ~32 MB
_BLOCK_ELEMS = 1 << 22


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, list[float]]:
    """Mean of per-sample values and its two-sided Student-t interval at `level` ([nan, nan] for < 2 values)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    m = float(x.mean())
    if x.size < 2:
        return m, [float("nan"), float("nan")]
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, [m - half, m + half]


def _coalitions(coalitions: Sequence[Any], n: int) -> list[np.ndarray]:
    out = []
    for k, c in enumerate(coalitions):
        m = np.unique(np.asarray(c, dtype=np.int64).ravel())
        if m.size == 0:
            raise ValueError(f"coalition {k} is empty: pass the members of each coalition (at least one player)")
        if m[0] < 0 or m[-1] >= n:
            raise ValueError(f"coalition {k} has members {m.tolist()} outside 0..{n - 1}: the cache has {n} players")
        out.append(m)
    return out


def _per_sample_norm(cache, coals: list[np.ndarray], members: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per coalition, per sample: pair mean, joint effect and summed singles, from the closed form of a
    norm + linear tail (the formulas of `valuations.pas.exact_pas`, extended from pairs to whole sets)."""
    tail = cache.tail
    Cb = None if cache.C_base is None else cache.C_base[:, members]
    cb = None if cache.coef_base is None else cache.coef_base[:, members]
    targets = cache.targets
    if tail.head_w.ndim == 2 and targets is not None:
        # an LM head has ~50k rows: keep only those the samples read, so that u @ C stays (<= N, members)
        uniq, inv = np.unique(np.asarray(targets), return_inverse=True)
        if uniq.size < tail.head_w.shape[0]:
            tail = NormTail(kind=tail.kind, head_w=tail.head_w[uniq], head_b=np.asarray(tail.head_b)[uniq],
                            weight=tail.weight, bias=tail.bias, eps=tail.eps)
            targets = inv.reshape(-1)
    p = _prepare(cache.H, cache.coef[:, members], cache.C[:, members], tail, targets, Cb, cb, torch.float64)
    N, d = p.N, p.d
    # players-major layout (members, N): gathering a coalition's rows copies contiguous memory
    s0sq = p.s0sq[None]
    s0 = torch.sqrt(s0sq)
    A = p.A[None]
    alpha = p.alpha.T.contiguous()
    affine = tail.kind == "none"
    if affine:
        single = alpha
        e1 = p_all = None
    else:
        e1 = ((p.gamma - 2 * p.beta) / d).T.contiguous()  # s_i^2 - s0^2
        f1 = _finv_sqrt_diff(e1, s0, s0sq)  # 1/s_i - 1/s0
        p_all = (A - alpha) * f1  # (A - a_i) f_i
        single = alpha / s0 - p_all
        del f1
    coef = p.coef.T.contiguous()
    coef_base = None if p.coef_base is None else p.coef_base.T.contiguous()
    G = p.Cc.T @ p.Cc
    if p.Cbc is not None:
        GCB, GBB = p.Cc.T @ p.Cbc, p.Cbc.T @ p.Cbc
    pos = {int(m): i for i, m in enumerate(members)}
    out: list[dict[str, np.ndarray] | None] = [None] * len(coals)
    by_size: dict[int, list[int]] = {}
    for c, m in enumerate(coals):
        by_size.setdefault(m.size, []).append(c)
    for k, which in by_size.items():
        step = max(1, _BLOCK_ELEMS // max(1, N * k * (k - 1) // 2))
        for s in range(0, len(which), step):
            cs = which[s:s + step]
            idx = torch.as_tensor(np.array([[pos[int(x)] for x in coals[c]] for c in cs]), dtype=torch.long)
            S_al = alpha[idx].sum(1)  # (B, N)
            singles_sum = single[idx].sum(1)
            if affine:  # l is affine in h: every interaction vanishes exactly (no norm to couple the writes)
                pair = torch.zeros_like(S_al)
                joint = S_al
            elif k == 1:
                pair = torch.full_like(S_al, float("nan"))
                joint = singles_sum
            else:
                # unordered pairs i < j only: Delta_ij is symmetric, and the mean over ordered pairs equals the
                # mean over unordered ones
                iu, ju = np.triu_indices(k, 1)
                I, J = idx[:, iu], idx[:, ju]  # (B, P)
                ci, cj = coef[I], coef[J]  # (B, P, N)
                gx = ci.mul_(cj).mul_(G[I, J][..., None])  # P delta_i . P delta_j
                if coef_base is not None:
                    ci, bi, bj = coef[I], coef_base[I], coef_base[J]
                    gx -= ci * bj * GCB[I, J][..., None]
                    gx -= bi * cj * GCB[J, I][..., None]
                    gx += bi.mul_(bj).mul_(GBB[I, J][..., None])
                    del ci, bi, bj
                del cj
                # Delta_ij = (A - a_i - a_j) f_ij - (A - a_i) f_i - (A - a_j) f_j: no linear part to cancel
                e_ij = e1[I].add_(e1[J]).add_(gx, alpha=2.0 / d)
                f_ij = _finv_sqrt_diff(e_ij, s0, s0sq)
                del e_ij
                delta = (A - alpha[I]).sub_(alpha[J]).mul_(f_ij)
                delta -= p_all[I]
                delta -= p_all[J]
                pair = delta.mean(1)
                del delta, f_ij
                e_S = e1[idx].sum(1).add_(gx.sum(1), alpha=2.0 / d)
                f_S = _finv_sqrt_diff(e_S, s0, s0sq)
                joint = S_al / s0 - (A - S_al) * f_S
            for b, c in enumerate(cs):
                out[c] = {"pair": pair[b].numpy(), "joint": joint[b].numpy(),
                          "singles_sum": singles_sum[b].numpy()}
    return out  # type: ignore[return-value]


def _per_sample_direct(cache, coals: list[np.ndarray], members: np.ndarray,
                       chunk_elems: int = 4_000_000) -> list[dict[str, np.ndarray]]:
    """The same per-sample quantities by evaluating the tail on every ablated residual (any tail)."""
    dtype = torch.float64
    H = torch.as_tensor(np.asarray(cache.H)).to(dtype)
    coef = torch.as_tensor(np.asarray(cache.coef)).to(dtype)
    C = torch.as_tensor(np.asarray(cache.C)).to(dtype)
    Cb = None if cache.C_base is None else torch.as_tensor(np.asarray(cache.C_base)).to(dtype)
    cb = None if cache.coef_base is None else torch.as_tensor(np.asarray(cache.coef_base)).to(dtype)
    tt = None if cache.targets is None else torch.as_tensor(np.asarray(cache.targets), dtype=torch.long)
    N, d = H.shape

    def logit(Hx: torch.Tensor, reps: int) -> torch.Tensor:
        with torch.no_grad():
            out = cache.tail.logit_torch(Hx, None if tt is None else tt.repeat(reps))
        return torch.as_tensor(out).to(dtype)

    # every subset the coalitions need: singles, pairs, the whole coalition; grouped by size
    subsets: dict[tuple[int, ...], torch.Tensor | None] = {}
    for m in coals:
        subsets.update({(int(i),): None for i in m})
        subsets.update({(int(m[a]), int(m[b])): None for a in range(m.size) for b in range(a + 1, m.size)})
        subsets[tuple(int(i) for i in m)] = None
    by_size: dict[int, list[tuple[int, ...]]] = {}
    for key in subsets:
        by_size.setdefault(len(key), []).append(key)
    step = max(1, chunk_elems // max(1, N * d))
    for keys in by_size.values():
        for s in range(0, len(keys), step):
            ks = keys[s:s + step]
            S = torch.as_tensor(np.array(ks, dtype=np.int64))  # (P, size)
            D = torch.einsum("nps,dps->pnd", coef[:, S], C[:, S])
            if Cb is not None:
                D = D - torch.einsum("nps,dps->pnd", cb[:, S], Cb[:, S])
            vals = logit((H[None] - D).reshape(-1, d), len(ks)).reshape(len(ks), N)
            for key, v in zip(ks, vals, strict=True):
                subsets[key] = v
    l0 = logit(H, 1)
    out = []
    for m in coals:
        k = m.size
        sing = {int(i): l0 - subsets[(int(i),)] for i in m}
        singles_sum = sum(sing.values())
        if k > 1:
            tot = torch.zeros(N, dtype=dtype)
            for a in range(k):
                for b in range(a + 1, k):
                    i, j = int(m[a]), int(m[b])
                    # Delta_ij = (l - l_-i) + (l - l_-j) - (l - l_-ij)
                    tot += sing[i] + sing[j] - (l0 - subsets[(i, j)])
            pair = 2 * tot / (k * (k - 1))  # each unordered pair counts twice among ordered pairs
        else:
            pair = torch.full((N,), float("nan"), dtype=dtype)
        joint = l0 - subsets[tuple(int(i) for i in m)]
        out.append({"pair": pair.numpy(), "joint": joint.numpy(), "singles_sum": singles_sum.numpy()})
    return out


def coalition_effects(cache, coalitions: list[np.ndarray], *, level: float = 0.95) -> list[dict]:
    """Per coalition, on the cache's samples: ``pair`` (paper eq. 8, Pair(C) from exact eq. 7 ablations) and
    ``pair_ci``, ``joint`` = mean of l - l_-C and ``joint_ci``, ``singles_sum`` = sum of psi(i) (eq. 6) and
    ``singles_sum_ci``, ``interaction`` = singles_sum - joint (per sample, so its CI is paired; for a pair
    it equals Delta_ij, positive = synergy in the paper's sign) and ``interaction_ci``, ``size``,
    ``members``, ``n_samples``. CIs are Student-t intervals at `level` over the per-sample values.

    ``cache`` is a `LayerCache` (pass the held-out half's cache when cross-fitting); ``coalitions`` are
    member index arrays. A single-player coalition has ``pair`` NaN (undefined, eq. 8).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95; got {level}")
    coals = _coalitions(coalitions, cache.n_players)
    if not coals:
        return []
    members = np.unique(np.concatenate(coals))
    if isinstance(cache.tail, NormTail):
        per = _per_sample_norm(cache, coals, members)
    else:
        per = _per_sample_direct(cache, coals, members)
    rows = []
    for m, v in zip(coals, per, strict=True):
        row: dict[str, Any] = {"members": m.tolist(), "size": int(m.size), "n_samples": int(cache.n_samples)}
        inter = v["singles_sum"] - v["joint"]
        for name, x in (("pair", v["pair"]), ("joint", v["joint"]), ("singles_sum", v["singles_sum"]),
                        ("interaction", inter)):
            if m.size < 2 and name in ("pair", "interaction"):
                row[name], row[f"{name}_ci"] = float("nan"), [float("nan"), float("nan")]
                continue
            row[name], row[f"{name}_ci"] = mean_ci(x, level)
        rows.append(row)
    return rows


def best_jaccard(members, other_labels) -> tuple[float, int]:
    """(largest Jaccard index |C & D| / |C | D| over the coalitions D of `other_labels`, the id of that D):
    does the partition fitted on the other half find this coalition too? Ties go to the smaller id."""
    m = np.unique(np.asarray(members, dtype=np.int64).ravel())
    lab = np.asarray(other_labels).ravel()
    if m.size == 0:
        raise ValueError("best_jaccard needs at least one member")
    if m[0] < 0 or m[-1] >= lab.size:
        raise ValueError(f"members {m.tolist()} fall outside the {lab.size} players of other_labels")
    cand, inter = np.unique(lab[m], return_counts=True)
    sizes = np.array([(lab == c).sum() for c in cand])
    jac = inter / (m.size + sizes - inter)
    b = int(np.argmax(jac))  # np.unique sorts the ids: the first maximum is the smallest id
    return float(jac[b]), int(cand[b])
