"""Interaction mass between the coalitions of consecutive layers (paper section 3.4).

numpy only. Every quantity is a matrix product over a coalition-indicator structure, never a Python
loop over coalition pairs:

* ``coalition_write``: r_C(p) = E_x |sum_{i in C} W_down[p, i] a_i(x)|, each coalition's mean absolute
  write to each residual dimension (coalitions of equal size stacked into one batched matrix product,
  chunked over coalitions and samples);
* ``mlp_interaction_mass``: M(C, C') = 1/(|C||C'|) sum_{q in C'} sum_p (|W_up'[q, p]| + |W_gate'[q, p]|)
  r_C(p), with the next layer's LoRA-merged weights folded with its input-norm gain;
* ``residual_interaction_mass``: the same with the mean absolute Jacobian of h_{l+1} with respect to
  h_l in place of the weights, for residual sites (MNIST), where the players are the coordinates p of
  h_l themselves and a coalition writes E_x |a_p(x)| on its own coordinates.

For the default ``relative`` reading of events (``events.relative_shares``) a transition also needs
where the mass lands player by player (``residual_transition``, ``mlp_transition``): ``forward``
(n_coal, n') the mass each coalition sends to each next-layer player, and ``backward`` (n, n_coal')
the mass each next-layer coalition receives from each source player (``backward_players`` (n, n'),
player to player, lets the next layer's partition be redrawn at random: the chance gate). From them come the mass a
size-matched random group would carry (mean and spread) and the most a group of a given size can
carry (the sum of its best members).

Coalition rows/columns follow ``coalition_ids(labels)``: the distinct labels >= 0 in increasing order.
Negative labels mean "not in any coalition" and are left out.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "coalition_ids",
    "coalition_sizes",
    "indicator",
    "coalition_write",
    "mlp_interaction_mass",
    "residual_interaction_mass",
    "residual_transition",
    "mlp_transition",
]


def _labels(labels, n: int | None, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-d integer array (labels_[i] = coalition id); "
                         f"got dtype {labels.dtype} and shape {labels.shape}")
    if n is not None and labels.size != n:
        raise ValueError(f"{what} has {labels.size} entries but the arrays have {n} players; "
                         "pass the partition of this layer's players")
    if not np.any(labels >= 0):
        raise ValueError(f"{what} holds no coalition (every label is negative); partition the layer first")
    return labels.astype(np.int64, copy=False)


def coalition_ids(labels) -> np.ndarray:
    """The coalition ids in row order of every mass matrix: distinct labels >= 0, increasing."""
    labels = np.asarray(labels)
    return np.unique(labels[labels >= 0])


def coalition_sizes(labels) -> np.ndarray:
    """|C| for every coalition, in ``coalition_ids`` order."""
    labels = np.asarray(labels)
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    return counts


def indicator(labels, dtype=np.float64) -> np.ndarray:
    """Dense (n, n_coal) 0/1 coalition-indicator matrix (a row of zeros for unassigned players)."""
    return _indicator_t(labels, dtype).T.toarray()


def _sorted_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Players sorted by coalition (unassigned dropped) and the start offset of each coalition."""
    keep = np.flatnonzero(labels >= 0)
    order = keep[np.argsort(labels[keep], kind="stable")]
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    return order, starts


def coalition_write(
    W_down: np.ndarray, acts: np.ndarray, labels, *, chunk_bytes: int = 2 << 20,
    dtype=np.float32,
) -> np.ndarray:
    """R (n_coal, d) with R[C, p] = E_x |sum_{i in C} W_down[p, i] a_i(x)|: each coalition's mean absolute write
    to residual dimension p.

    ``W_down`` is the (LoRA-merged) down projection (d, n), ``acts`` the players' activations (N, n)
    at the readout position. Coalitions of equal size are stacked and their writes W_C a_C(x) computed
    by one batched matrix product per chunk (chunks of ``chunk_bytes``, over coalitions and samples:
    small chunks stay in cache, which is what makes this fast). The absolute value is taken per sample
    and dimension, after the sum over the coalition, as the definition requires.
    """
    W_down = np.asarray(W_down)
    acts = np.asarray(acts)
    if W_down.ndim != 2 or acts.ndim != 2:
        raise ValueError(f"W_down must be (d, n) and acts (N, n); got {W_down.shape} and {acts.shape}")
    d, n = W_down.shape
    if acts.shape[1] != n:
        raise ValueError(f"acts has {acts.shape[1]} players but W_down has {n} columns; "
                         "pass W_down as (d_model, d_ff) and acts as (samples, d_ff)")
    if acts.shape[0] == 0:
        raise ValueError("acts holds no samples; pass at least one input's activations")
    labels = _labels(labels, n, "labels")
    order, starts = _sorted_groups(labels)
    sizes = np.diff(np.r_[starts, order.size])
    Wt = np.asarray(W_down.T, dtype=dtype)                       # (n, d): row i = player i's write
    At = np.ascontiguousarray(np.asarray(acts, dtype=dtype).T)   # (n, N)
    N = At.shape[1]
    item = np.dtype(dtype).itemsize
    n_chunk = int(min(N, max(1, chunk_bytes // (d * item))))     # samples per chunk
    g_chunk = int(max(1, chunk_bytes // (d * n_chunk * item)))   # coalitions per chunk
    ones = np.ones(n_chunk, dtype=dtype)
    R = np.zeros((starts.size, d), dtype=np.float64)
    for s in np.unique(sizes):
        cidx = np.flatnonzero(sizes == s)
        members = order[starts[cidx][:, None] + np.arange(s)[None, :]]   # (G, s) player ids
        for g0 in range(0, cidx.size, g_chunk):
            mem = members[g0:g0 + g_chunk]
            Wb = Wt[mem].transpose(0, 2, 1)                      # (g, d, s)
            for x0 in range(0, N, n_chunk):
                Ab = At[mem, x0:x0 + n_chunk]                    # (g, s, b)
                out = np.matmul(Wb, Ab)                          # (g, d, b): each coalition's write
                np.abs(out, out=out)
                R[cidx[g0:g0 + g_chunk]] += out @ ones[:Ab.shape[2]]
    return R / N


def _fold_next(W_up_next, W_gate_next, norm_gain_next) -> np.ndarray:
    """|W_up'| + |W_gate'| with column p scaled by |gain[p]| (the input norm multiplies h[p] by gain[p])."""
    W_up_next = np.asarray(W_up_next, dtype=np.float64)
    if W_up_next.ndim != 2:
        raise ValueError(f"W_up_next must be (d_ff_next, d_model); got shape {W_up_next.shape}")
    W = np.abs(W_up_next)
    if W_gate_next is not None:
        W_gate_next = np.asarray(W_gate_next, dtype=np.float64)
        if W_gate_next.shape != W_up_next.shape:
            raise ValueError(f"W_gate_next has shape {W_gate_next.shape} but W_up_next has "
                             f"{W_up_next.shape}; pass both as (d_ff_next, d_model)")
        W = W + np.abs(W_gate_next)
    if norm_gain_next is not None:
        g = np.asarray(norm_gain_next, dtype=np.float64).ravel()
        if g.size != W.shape[1]:
            raise ValueError(f"norm_gain_next has {g.size} entries but the next layer reads "
                             f"{W.shape[1]} residual dimensions; pass the input-norm weight (d_model,)")
        W = W * np.abs(g)[None, :]
    return W


def _indicator_t(labels: np.ndarray, dtype=np.float64):
    """Sparse (n_coal, n) CSR transpose of ``indicator(labels)``: one entry per assigned player."""
    from scipy.sparse import csr_matrix

    labels = np.asarray(labels)
    keep = np.flatnonzero(labels >= 0)
    ids, row = np.unique(labels[keep], return_inverse=True)
    return csr_matrix((np.ones(keep.size, dtype=dtype), (row.ravel(), keep)), shape=(ids.size, labels.size))


def _aggregate(A: np.ndarray, labels_next: np.ndarray, *, At: np.ndarray | None = None) -> np.ndarray:
    """Sum the columns of A (rows, n') by next-layer coalition: A @ indicator(labels_next), as a sparse
    product (one entry per player). ``At``: a C-contiguous copy of A.T, for callers that aggregate the same
    A under many partitions (the chance test's redraws), so that it is not transposed every time."""
    if At is None:
        At = np.ascontiguousarray(np.asarray(A).T)
    return (_indicator_t(labels_next, At.dtype) @ At).T


def _mlp_inputs(R, W_up_next, W_gate_next, norm_gain_next, labels, labels_next
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(R, source coalition sizes, the next layer's folded input weights (n', d), labels_next), checked against
    each other (one-line errors)."""
    R = np.asarray(R, dtype=np.float64)
    sizes = coalition_sizes(_labels(labels, None, "labels"))
    if R.ndim != 2 or R.shape[0] != sizes.size:
        raise ValueError(f"R has shape {R.shape} but labels define {sizes.size} coalitions; "
                         "compute R with coalition_write(W_down, acts, labels) for the same labels")
    W = _fold_next(W_up_next, W_gate_next, norm_gain_next)          # (n', d)
    if W.shape[1] != R.shape[1]:
        raise ValueError(f"R writes {R.shape[1]} residual dimensions but the next layer reads "
                         f"{W.shape[1]}; pass W_up_next as (d_ff_next, d_model)")
    labels_next = _labels(labels_next, W.shape[0], "labels_next")
    return R, sizes, W, labels_next


def mlp_interaction_mass(
    R: np.ndarray, W_up_next: np.ndarray, W_gate_next: np.ndarray | None,
    norm_gain_next: np.ndarray | None, labels, labels_next,
) -> np.ndarray:
    """M (n_coal, n_coal') = 1/(|C||C'|) sum_{q in C'} sum_p (|W_up'[q,p]| + |W_gate'[q,p]|) r_C(p).

    The next layer's weights are LoRA-merged (n', d) and folded with its input-norm gain (d,) when
    given. ``R`` comes from ``coalition_write`` with ``labels``; ``labels_next`` partitions the n'
    next-layer players. Two matrix products: (n_coal x d) @ (d x n'), then the column aggregation.
    """
    R, sizes, W, labels_next = _mlp_inputs(R, W_up_next, W_gate_next, norm_gain_next, labels, labels_next)
    sizes_next = coalition_sizes(labels_next)
    M = _aggregate(R @ W.T, labels_next)                            # (n_coal, n_coal')
    return M / (sizes[:, None] * sizes_next[None, :])


def residual_interaction_mass(J_abs: np.ndarray, acts: np.ndarray, labels, labels_next) -> np.ndarray:
    """M (n_coal, n_coal') = 1/(|C||C'|) sum_{q in C'} sum_{p in C} J_abs[q, p] E_x|a_p(x)| (residual sites).

    ``J_abs`` (d', d) is the mean absolute Jacobian of h_{l+1} with respect to h_l
    (``tracking.jacobian.residual_jacobian_abs``); ``acts`` (N, d) the coordinates of h_l, or their
    mean absolute values (d,) directly.
    """
    J, A, labels, labels_next = _residual_inputs(J_abs, acts, labels, labels_next)
    T = _aggregate(J * A[None, :], labels)                          # (d', n_coal): sum over p in C
    M = _aggregate(T.T, labels_next)                                # (n_coal, n_coal'): sum over q in C'
    return M / (coalition_sizes(labels)[:, None] * coalition_sizes(labels_next)[None, :])


def _residual_inputs(J_abs, acts, labels, labels_next) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(J, mean |h_l| per coordinate, labels, labels_next) checked against each other (one-line errors)."""
    J = np.asarray(J_abs, dtype=np.float64)
    if J.ndim != 2:
        raise ValueError(f"J_abs must be (d_next, d); got shape {J.shape}")
    acts = np.asarray(acts, dtype=np.float64)
    A = np.abs(acts).mean(axis=0) if acts.ndim == 2 else np.abs(acts)
    if A.shape != (J.shape[1],):
        raise ValueError(f"acts describe {A.shape[0]} coordinates but J_abs has {J.shape[1]} columns; "
                         "pass h_l as (samples, d)")
    labels = _labels(labels, J.shape[1], "labels")
    labels_next = _labels(labels_next, J.shape[0], "labels_next")
    return J, A, labels, labels_next


def residual_transition(J_abs: np.ndarray, acts: np.ndarray, labels, labels_next) -> dict[str, np.ndarray]:
    """``M`` (as ``residual_interaction_mass``), ``forward`` (n_coal, d') and ``backward`` (d, n_coal') at a
    residual site, where mass is additive over source and target players alike (both are exact)."""
    J, A, labels, labels_next = _residual_inputs(J_abs, acts, labels, labels_next)
    P = J * A[None, :]                                              # (d', d): mass from p to q
    forward = _aggregate(P, labels).T                               # (n_coal, d')
    backward = _aggregate(P.T, labels_next)                         # (d, n_coal')
    M = _aggregate(forward, labels_next)
    M = M / (coalition_sizes(labels)[:, None] * coalition_sizes(labels_next)[None, :])
    return {"M": M, "forward": forward, "backward": backward, "backward_players": np.ascontiguousarray(P.T),
            "backward_exact": np.array(True)}


def mlp_transition(
    R: np.ndarray, W_up_next: np.ndarray, W_gate_next: np.ndarray | None, norm_gain_next: np.ndarray | None,
    labels, labels_next, *, W_down: np.ndarray | None = None, acts_abs_mean: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``M`` (as ``mlp_interaction_mass``), ``forward`` (n_coal, n') and, when ``W_down`` (d, n) and
    ``acts_abs_mean`` (n,) = E_x |a_i(x)| are given, ``backward`` (n, n_coal').

    A coalition's write is not additive over its members (|sum| <= sum |.|), so ``backward`` is what each
    player would write on its own, E_x |W_down[p, i] a_i(x)| = |W_down[p, i]| E_x |a_i(x)|, pushed through
    the next layer (``backward_exact`` False: the shares rescale it to the coalitions' own totals).
    """
    R, sizes, W, labels_next = _mlp_inputs(R, W_up_next, W_gate_next, norm_gain_next, labels, labels_next)
    forward = R @ W.T                                               # (n_coal, n')
    M = _aggregate(forward, labels_next) / (sizes[:, None] * coalition_sizes(labels_next)[None, :])
    out = {"M": M, "forward": forward, "backward_exact": np.array(False)}
    if W_down is not None and acts_abs_mean is not None:
        Wd = np.abs(np.asarray(W_down, dtype=np.float64))           # (d, n)
        a = np.asarray(acts_abs_mean, dtype=np.float64).ravel()
        if Wd.shape != (R.shape[1], a.size):
            raise ValueError(f"W_down has shape {Wd.shape} but R writes {R.shape[1]} dimensions and "
                             f"acts_abs_mean has {a.size} players; pass W_down as (d_model, d_ff)")
        single = Wd.T * a[:, None]                                  # (n, d): each player's own write
        out["backward_players"] = single @ W.T                      # (n, n'): player to player
        out["backward"] = _aggregate(out["backward_players"], labels_next)   # (n, n_coal')
    return out
