"""From a model (or adapter path) and inputs to the pairwise valuations of one layer, in one call.

    from hedonic_neurons.models import compute_valuations
    v = compute_valuations("runs/x/adapter", texts, layer=10)     # or a model object + tokenizer=
    v.phi_pas, v.pas_se, v.psi, v.phi_oca, v.phi_hessian, v.agreement

Exact PAS uses the closed form of `valuations.pas.exact_pas` when the tail is a final norm + linear
head (LLaMA, Mistral, GPT-NeoX, the MNIST model); for any other tail (BERT's post-LN + pooler +
classifier) the pair ablations are evaluated directly, batched, through the tail modules.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .extract import LayerCache, layer_cache, text_batches
from .targets import (
    MAX_SAMPLES,
    check_target,
    describe_target,
    model_target,
    predicted_labels,
    samples_for_target,
    target_batches,
)

log = logging.getLogger(__name__)

__all__ = ["Valuations", "compute_valuations", "valuations_from_cache", "exact_pas_pairs", "target_inputs", "METHODS"]

METHODS = ("oca", "pas", "hessian")


@dataclass
class Valuations:
    """Pairwise valuations of one layer's players (each (n, n), zero diagonal) and how they were made."""

    layer: int
    site: str
    ablation: str
    n_samples: int
    n_players: int
    phi_oca: np.ndarray | None = None
    oca_null_se: float | None = None
    phi_pas: np.ndarray | None = None
    pas_se: np.ndarray | None = None
    psi: np.ndarray | None = None
    psi_se: np.ndarray | None = None
    phi_hessian: np.ndarray | None = None
    agreement: dict | None = None
    verification: dict | None = None  # self-verification against the model's modules (models.verify)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    cache: LayerCache | None = field(default=None, repr=False)
    sample_text: np.ndarray | None = None  # (N,) the text of each sample (next-token: many samples per text)
    sample_pos: np.ndarray | None = None  # (N,) the token position each sample was read at

    _ARRAYS = ("phi_oca", "phi_pas", "pas_se", "psi", "psi_se", "phi_hessian")
    _SAMPLES = ("sample_text", "sample_pos")

    def matrices(self) -> dict[str, np.ndarray]:
        """The arrays that were computed, by name (for `RunDir.save_matrices` or safetensors)."""
        return {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}

    @property
    def target(self) -> dict | None:
        """What the local logit read (`models.targets.describe_target`), also in valuations.json."""
        return self.meta.get("target")

    def info(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready."""
        return {"layer": self.layer, "site": self.site, "ablation": self.ablation, "n_samples": self.n_samples,
                "n_players": self.n_players, "oca_null_se": self.oca_null_se, "agreement": self.agreement,
                "verification": self.verification, "timings": self.timings, "meta": self.meta}

    def save(self, directory: str | Path) -> Path:
        """Write `valuations.safetensors` and `valuations.json` into `directory` (atomic renames)."""
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "valuations.safetensors.tmp"
        arrays = {**self.matrices(), **{k: np.asarray(getattr(self, k), dtype=np.int64) for k in self._SAMPLES
                                        if getattr(self, k) is not None}}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        tmp.replace(d / "valuations.safetensors")
        tmpj = d / "valuations.json.tmp"
        tmpj.write_text(json.dumps(self.info(), indent=2, default=float))
        tmpj.replace(d / "valuations.json")
        if self.verification is not None:
            from .verify import save_verification

            save_verification(self.verification, d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Valuations:
        """Read what `save` wrote."""
        from safetensors.numpy import load_file

        d = Path(directory)
        if not (d / "valuations.json").is_file():
            raise FileNotFoundError(f"no valuations.json in {d}: compute and save valuations there first")
        info = json.loads((d / "valuations.json").read_text())
        arrays = load_file(str(d / "valuations.safetensors"))
        return cls(**info, **arrays)


def _pairs_chunks(n: int, chunk: int):
    iu, ju = np.triu_indices(n, 1)
    for s in range(0, iu.size, chunk):
        yield iu[s:s + chunk], ju[s:s + chunk]


def exact_pas_pairs(cache: LayerCache, pairs: tuple[np.ndarray, np.ndarray] | None = None, *,
                    chunk_elems: int = 4_000_000, dtype: torch.dtype = torch.float64,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Delta_ij means and standard errors for the given pairs (all i < j when None), any tail.

    Evaluates tail(H - delta_i - delta_j) directly, batched over pairs x samples: works for every tail
    (a `ModuleTail` included) at O(pairs x N x tail cost). Returns ((2, P) pair indices, (P,) means,
    (P,) standard errors); the singles psi (eq. 6) come from `exact_singles`.
    """
    from tqdm.auto import tqdm

    n, N, d = cache.n_players, cache.n_samples, cache.H.shape[1]
    if pairs is None:
        pi, pj = np.triu_indices(n, 1)
    else:
        pi, pj = (np.asarray(p, dtype=np.int64) for p in pairs)
    H = torch.as_tensor(cache.H).to(dtype)
    coef = torch.as_tensor(cache.coef).to(dtype)
    C = torch.as_tensor(cache.C).to(dtype)
    Cb = None if cache.C_base is None else torch.as_tensor(cache.C_base).to(dtype)
    cb = None if cache.coef_base is None else torch.as_tensor(cache.coef_base).to(dtype)
    tail = cache.tail
    targets = cache.targets
    tt = None if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.long)

    def logit(Hx: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return tail.logit_torch(Hx, t)

    def delta(idx: np.ndarray) -> torch.Tensor:  # (P, N, d)
        ii = torch.as_tensor(idx)
        D = coef[:, ii].T[:, :, None] * C[:, ii].T[:, None, :]
        if Cb is not None:
            D = D - cb[:, ii].T[:, :, None] * Cb[:, ii].T[:, None, :]
        return D

    l0 = logit(H, tt)
    players = np.unique(np.concatenate([pi, pj])) if pi.size else np.zeros(0, dtype=np.int64)
    li = torch.zeros((n, N), dtype=dtype)
    step = max(1, chunk_elems // max(1, N * d))
    for s in range(0, players.size, step):
        idx = players[s:s + step]
        Hs = (H[None] - delta(idx)).reshape(-1, d)
        li[torch.as_tensor(idx)] = logit(Hs, None if tt is None else tt.repeat(idx.size)).reshape(idx.size, N)
    vals = np.empty(pi.size)
    ses = np.empty(pi.size)
    for s in tqdm(range(0, pi.size, step), desc="exact PAS (direct)", disable=not progress, leave=False):
        a, b = pi[s:s + step], pj[s:s + step]
        Hs = (H[None] - delta(a) - delta(b)).reshape(-1, d)
        lij = logit(Hs, None if tt is None else tt.repeat(a.size)).reshape(a.size, N)
        D = (l0[None] - li[torch.as_tensor(a)] - li[torch.as_tensor(b)] + lij).double()
        vals[s:s + step] = D.mean(1).numpy()
        ses[s:s + step] = (D.std(1, unbiased=True) / np.sqrt(N)).numpy() if N > 1 else np.nan
    return np.stack([pi, pj]), vals, ses


def exact_singles(cache: LayerCache) -> tuple[np.ndarray, np.ndarray]:
    """psi(i) = E_x[l(x) - l_-i(x)] (paper eq. 6) and its standard error, any tail, by direct evaluation."""
    n, N = cache.n_players, cache.n_samples
    out = np.empty((n, N))
    l0 = cache.local_logit()
    for i in range(n):
        out[i] = l0 - cache.local_logit([i])
    se = out.std(1, ddof=1) / np.sqrt(N) if N > 1 else np.full(n, np.nan)
    return out.mean(1), se


def valuations_from_cache(
    cache: LayerCache,
    methods: Sequence[str] = METHODS,
    *,
    pas_dtype: Any = np.float64,
    oca_dtype: Any = None,
    max_direct_cost: float = 2e10,
    agreement_pairs: int = 2_000,
    progress: bool = True,
) -> Valuations:
    """OCA, exact PAS (with se and psi) and Hessian PAS of a cached layer, plus Hessian-vs-exact agreement.

    For a tail that is not norm + linear head, exact PAS over all pairs is evaluated directly when
    pairs x samples x d^2 (the tail's cost) is at most `max_direct_cost`; otherwise only on a random
    subset of `agreement_pairs` pairs, reported in `agreement` (phi_pas then stays None: use the Hessian).
    """
    from ..valuations.agreement import agreement
    from ..valuations.oca import oca, oca_null_se
    from ..valuations.pas import exact_pas, hessian_pas
    from ..valuations.tail import NormTail

    progress = progress and not os.environ.get("TQDM_DISABLE")  # the CLI's --quiet
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown valuation method(s) {bad or methods}: use any of {METHODS}")
    n = cache.n_players
    v = Valuations(layer=cache.layer, site=cache.site, ablation=cache.ablation, n_samples=cache.n_samples,
                   n_players=n, cache=cache, meta=dict(cache.meta), sample_text=cache.sample_text,
                   sample_pos=cache.sample_pos)
    from ..valuations.postnorm import PostNormTail, exact_pas_postnorm

    norm_tail = isinstance(cache.tail, NormTail)
    post_tail = isinstance(cache.tail, PostNormTail)
    v.meta["tail"] = cache.tail.kind if norm_tail else repr(cache.tail)
    if "pas" in methods and not (norm_tail or post_tail):
        v.meta["pas_note"] = _direct_cost_note(cache, max_direct_cost)
        log.warning("%s", v.meta["pas_note"])  # said before the run, with its cost
    kw = cache.math_kwargs()
    if "oca" in methods:
        t = time.perf_counter()
        # OCA weight term: W_down columns at an MLP site; at a residual site what reads it next (the
        # adapter's residual_readers), or the identity (1 - |cos| = 1) where the adapter names none
        v.phi_oca = oca(cache.acts, cache.W_oca, dtype=oca_dtype)
        v.oca_null_se = oca_null_se(cache.n_samples)
        v.timings["oca"] = time.perf_counter() - t
    if "pas" in methods:
        t = time.perf_counter()
        if norm_tail or post_tail:
            fn = exact_pas if norm_tail else exact_pas_postnorm  # post-norm: float64 always
            res = fn(**kw, dtype=pas_dtype, progress=progress)
            v.phi_pas, v.pas_se, v.psi, v.psi_se = res.phi, res.se, res.psi, res.psi_se
            v.meta["logit_mean"] = res.logit_mean
        elif n * (n - 1) // 2 * cache.n_samples * cache.H.shape[1] ** 2 <= max_direct_cost:
            (pi, pj), vals, ses = exact_pas_pairs(cache, progress=progress)
            phi = np.zeros((n, n))
            se = np.zeros((n, n))
            phi[pi, pj] = phi[pj, pi] = vals
            se[pi, pj] = se[pj, pi] = ses
            v.phi_pas, v.pas_se = phi, se
            v.psi, v.psi_se = exact_singles(cache)
        else:
            log.warning("exact PAS for all %d pairs through a %s tail is above max_direct_cost: phi_pas stays None; "
                        "computing psi and a %d-pair subset for the agreement only", n * (n - 1) // 2,
                        v.meta["tail"], agreement_pairs)
            v.psi, v.psi_se = exact_singles(cache)
        v.timings["pas_exact"] = time.perf_counter() - t
    if "hessian" in methods:
        t = time.perf_counter()
        if norm_tail:
            v.phi_hessian = hessian_pas(**kw, dtype=pas_dtype, progress=progress)
        else:
            tail = cache.tail
            v.phi_hessian = hessian_pas(kw["H"], kw["coef"], kw["C"], tail.logit_torch, kw["targets"],
                                        C_base=kw.get("C_base"), coef_base=kw.get("coef_base"),
                                        dtype=pas_dtype, progress=progress)
        v.timings["pas_hessian"] = time.perf_counter() - t
    if v.phi_hessian is not None and n >= 3:
        t = time.perf_counter()
        if v.phi_pas is not None:
            v.agreement = agreement(v.phi_hessian, v.phi_pas)
        elif "pas" in methods:
            rng = np.random.default_rng(0)
            m = min(agreement_pairs, n * (n - 1) // 2)
            i = rng.integers(0, n, size=m)
            j = (i + rng.integers(1, n, size=m)) % n
            pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], 1), axis=0)
            (pi, pj), vals, _ = exact_pas_pairs(cache, (pairs[:, 0], pairs[:, 1]))
            exact = np.zeros((n, n))
            exact[pi, pj] = exact[pj, pi] = vals
            # only these pairs have exact values: the agreement is taken on them
            v.agreement = agreement(v.phi_hessian, exact, pairs=(pi, pj))
            v.agreement["subset"] = "random pairs (exact PAS of a non-norm tail on all pairs is too costly)"
        v.timings["agreement"] = time.perf_counter() - t
    return v


def _direct_cost_note(cache: LayerCache, max_direct_cost: float) -> str:
    """What exact PAS costs for a tail without a closed form, measured on one batch of tail calls."""
    n, N, d = cache.n_players, cache.n_samples, cache.H.shape[1]
    pairs = n * (n - 1) // 2
    rows = min(N, 4096)
    t = time.perf_counter()
    cache.tail.logit(cache.H[:rows], None if cache.targets is None else cache.targets[:rows])
    per_row = (time.perf_counter() - t) / rows
    est = pairs * N * per_row
    cost = pairs * N * d * d
    verdict = ("computing it by direct evaluation" if cost <= max_direct_cost else
               "above max_direct_cost (2e10 pair-samples x d^2 by default): only psi and a random pair subset "
               "are computed exactly, the Hessian stands in for the full matrix")
    return (f"tail {cache.tail!r} has no closed form for exact PAS: all {pairs:,} pairs x {N} inputs by direct "
            f"evaluation cost {pairs * N:,} tail calls, about {est:,.0f} s at the {per_row * 1e6:.1f} us/call "
            f"measured; {verdict}")


def _as_batches(inputs: Any, tokenizer: Any, *, batch_size: int, max_length: int,
                targets: Sequence[int] | None) -> Iterable[Any]:
    if isinstance(inputs, str):
        raise ValueError("inputs is one string: pass a list of texts")
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer: pass tokenizer=..., or give the model as a name/path")
        return text_batches(tokenizer, list(inputs), batch_size=batch_size, max_length=max_length,
                            targets=targets)
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        X = torch.as_tensor(inputs)
        if X.is_floating_point() and not torch.isfinite(X).all():
            raise ValueError("inputs contain NaN or inf values: clean or drop those samples first")
        y = None if targets is None else torch.as_tensor(np.asarray(targets))
        if y is not None and len(y) != len(X):
            raise ValueError(f"{len(y)} targets for {len(X)} inputs: give one target per input")
        return [X[s:s + batch_size] if y is None else (X[s:s + batch_size], y[s:s + batch_size])
                for s in range(0, len(X), batch_size)]
    if isinstance(inputs, (list, tuple)) and not inputs:
        raise ValueError("inputs is empty: give at least two inputs")
    return inputs  # an iterable of ready batches


def compute_valuations(
    model: nn.Module | str | Path,
    inputs: Any,
    layer: int,
    *,
    tokenizer: Any = None,
    methods: Sequence[str] = METHODS,
    site: str = "mlp",
    ablation: str = "auto",
    target: str | None = None,
    positions: str = "all",
    max_samples: int | None = MAX_SAMPLES,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    allow_new_head: bool = False,
    targets: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int = 256,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pas_dtype: Any = np.float64,
    progress: bool = True,
    verify: bool = True,
    adapter: Any = None,
) -> Valuations:
    """Valuations (OCA, exact PAS + se + psi, Hessian PAS, their agreement) of `layer` over `inputs`.

    ``target`` (`models.targets`): ``"next-token"`` (a causal LM's own next-token logit, the default for one;
    ``positions`` "all" / "last", ``max_samples`` (text, position) samples drawn with ``seed``), ``"label"``
    (the gold label's logit, ``labels`` one per input), ``"predicted"`` (the model's argmax class) or
    ``"head"`` (the head as it is). None: the model's own (`models.targets.model_target`). A model name or
    path is loaded for that target; a head that would be new is refused unless ``allow_new_head``. What was
    read is recorded in ``v.meta["target"]``; ``v.sample_text`` / ``v.sample_pos`` say where each sample is.
    ``targets``: the older name of ``labels``.

    ``verify`` (default) checks a few psi(i), psi(i, j) and OCA weight columns against direct ablation
    through the model's own modules (`models.verify.verify_valuations`, result in ``v.verification``) and
    raises `VerificationError` when they disagree; ``verify=False`` is the CLI's ``--no-verify``.
    ``adapter``: a `ModelAdapter` subclass to use for this model (the CLI's ``--adapter module:Class``).

    `model`: a (PEFT) model object, or "smollm2" / "minilm" / a local path / a PEFT adapter directory
    (then the tokenizer comes with it). `inputs`: texts, an (N, d_in) array (with `labels` for a
    classifier read at the true class), or an iterable of ready batches (dicts of model inputs).
    """
    progress = progress and not os.environ.get("TQDM_DISABLE")  # the CLI's --quiet
    if targets is not None and labels is not None:
        raise ValueError("labels and targets are the same thing: pass labels only")
    labels = targets if labels is None else labels
    if isinstance(model, (str, Path)):
        from .loading import load_model
        from .precheck import check_layers_config

        check_layers_config(str(model), [layer], flag="layer")  # from config.json, before any weight is read
        model, tok = load_model(model, dtype=dtype, check=adapter is None, target=target,
                                allow_new_head=allow_new_head, labels_given=labels is not None)
        tokenizer = tokenizer or tok
        model = model.to(device)
    if adapter is not None:
        from .detect import use_adapter

        use_adapter(model, adapter)
    batches, kind, _ = target_inputs(model, inputs, tokenizer=tokenizer, target=target, positions=positions,
                                           max_samples=max_samples, seed=seed, labels=labels,
                                           batch_size=batch_size, max_length=max_length, device=device)
    if verify and not isinstance(batches, (list, tuple)):
        batches = list(batches)  # self-verification re-runs a few of them
    t = time.perf_counter()
    cache = layer_cache(model, batches, layer, site=site, ablation=ablation, device=device, dtype=dtype,
                        progress=progress)
    t_cache = time.perf_counter() - t
    if cache.n_samples < 2:
        raise ValueError(f"{cache.n_samples} input(s): valuations are expectations over inputs; give at least 2")
    v = valuations_from_cache(cache, methods, pas_dtype=pas_dtype, progress=progress)
    # n_texts: the texts the samples come from (a next-token draw may leave some texts out)
    v.meta["target"] = describe_target(model, kind, positions=positions, n_samples=cache.n_samples,
                                       max_samples=max_samples, seed=seed, n_texts=_n_texts(cache))
    v.timings = {"forward": t_cache, **v.timings}
    if verify:
        from .verify import verify_valuations

        t = time.perf_counter()
        verify_valuations(model, batches, v, device=device)
        v.timings["verify"] = time.perf_counter() - t
    else:
        v.meta["verification"] = "skipped (verify=False / --no-verify)"
    return v


def _n_texts(cache: LayerCache) -> int | None:
    return None if cache.sample_text is None else int(np.unique(cache.sample_text).size)


def target_inputs(model: nn.Module, inputs: Any, *, tokenizer: Any = None, target: str | None = None,
                  positions: str = "all", max_samples: int | None = MAX_SAMPLES, seed: int = 0,
                  labels: Sequence[int] | None = None, batch_size: int = 8, max_length: int = 256,
                  device: str | torch.device = "cpu",
                  samples: Sequence[tuple[int, int]] | None = None) -> tuple[Any, str, int | None]:
    """(batches holding the target's samples, the target, number of texts or None) for any `inputs` of
    `compute_valuations`: texts, an array, or ready batches. Refuses a target the model cannot give and labels
    that do not fit it (`models.targets.check_target`). ``samples``: next-token (text, position) pairs to
    keep instead of drawing them (a torchrun rank's share of one global draw)."""
    texts = isinstance(inputs, (list, tuple)) and bool(inputs) and isinstance(inputs[0], str)
    array = isinstance(inputs, (np.ndarray, torch.Tensor))
    carried = False  # ready batches that carry their own labels ((x, y) pairs, dicts with "labels")
    if not texts and not array and not isinstance(inputs, str):
        inputs = list(inputs)
        carried = labels is None and any((isinstance(b, dict) and b.get("labels") is not None)
                                         or (isinstance(b, (tuple, list)) and len(b) == 2) for b in inputs)
    kind = model_target(model, target, labels_given=labels is not None or carried)
    n_in = len(inputs) if texts or array else None
    if not (carried and kind == "label"):
        check_target(model, kind, labels, n_in)
    if texts:
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer: pass tokenizer=..., or give the model as a name/path")
        if len(inputs) < 2 and kind != "next-token":
            raise ValueError("inputs holds fewer than 2 texts: valuations are expectations; give at least 2")
        return target_batches(tokenizer, list(inputs), target=kind, positions=positions, max_samples=max_samples,
                              seed=seed, labels=labels, batch_size=batch_size, max_length=max_length,
                              model=model, device=device, samples=samples), kind, len(inputs)
    if array:
        if kind == "next-token":
            raise ValueError("next-token samples are read from token ids: give texts or token batches, not an array")
        if kind == "predicted":
            plain = _as_batches(inputs, tokenizer, batch_size=batch_size, max_length=max_length, targets=None)
            labels = predicted_labels(model, plain, device)
        return _as_batches(inputs, tokenizer, batch_size=batch_size, max_length=max_length,
                           targets=labels), kind, n_in
    batches = _as_batches(inputs, tokenizer, batch_size=batch_size, max_length=max_length, targets=None)
    if kind in ("next-token", "predicted") or labels is not None:
        batches = samples_for_target(batches, kind, positions=positions, max_samples=max_samples, seed=seed,
                                     labels=labels, model=model, device=device, samples=samples)
    return batches, kind, None


def valuation_options(**options: Any) -> dict[str, Any]:
    """The keywords of `compute_valuations` (its signature is their one declaration) with the defaults filled
    in, for functions that forward them (`distributed_valuations`); TypeError naming an unknown keyword."""
    import inspect

    bound = inspect.signature(compute_valuations).bind(None, None, 0, **options)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("model", "inputs", "layer")}


def exact_pair_means(cache_of: Callable[[], LayerCache], coalitions: list[np.ndarray], max_pairs: int,
                     seed: int) -> list[float]:
    """Pair of each coalition from exact pair ablations on the cache `cache_of()` (built only when some pair is
    needed; for tails with no closed form): every pair of a coalition with at most `max_pairs` pairs, else that
    many drawn at random (an unbiased estimate of the mean over pairs). One batched call for all coalitions."""
    rng = np.random.default_rng(seed)
    chosen = []
    for coal in coalitions:
        k = coal.size
        if k * (k - 1) // 2 <= max_pairs:
            iu, ju = np.triu_indices(k, 1)
        else:
            iu = rng.integers(0, k, size=max_pairs)
            ju = (iu + rng.integers(1, k, size=max_pairs)) % k
        a_, b_ = coal[iu], coal[ju]
        chosen.append((np.minimum(a_, b_), np.maximum(a_, b_)))
    keys = {(int(x), int(y)) for pa, pb in chosen for x, y in zip(pa, pb, strict=True)}
    val: dict[tuple[int, int], float] = {}
    if keys:
        pi, pj = (np.array(x, dtype=np.int64) for x in zip(*sorted(keys), strict=True))
        (pi, pj), vals, _ = exact_pas_pairs(cache_of(), (pi, pj), progress=False)
        val = {(int(x), int(y)): float(v) for x, y, v in zip(pi, pj, vals, strict=True)}
    return [float(np.mean([val[(int(x), int(y))] for x, y in zip(pa, pb, strict=True)])) for pa, pb in chosen]


def pas_valuations(cache: LayerCache, direct_pas_limit: float, agreement_pairs: int, progress: bool = False
                   ) -> tuple[Valuations, dict[str, np.ndarray], dict[str, Any]]:
    """OCA and PAS of one cache as the reranker values a half of its probe pairs: exact PAS (+ se, psi, psi_se)
    for a norm tail or when pairs x inputs <= `direct_pas_limit`, else the Hessian PAS with exact psi and its
    exact agreement on `agreement_pairs` random pairs (`hessian_valuations`). Returns (valuations, with psi
    and the cache, for self-verification; {phi_oca, oca_se, phi_pas, [pas_se], psi, [psi_se]}; info)."""
    from ..valuations.oca import oca_se
    from ..valuations.tail import NormTail

    n, N = cache.n_players, cache.n_samples
    info: dict[str, Any] = {}
    if isinstance(cache.tail, NormTail) or n * (n - 1) // 2 * N <= direct_pas_limit:
        v = valuations_from_cache(cache, ("oca", "pas"), progress=progress)
        phi_pas, pas_se, psi, psi_se = v.phi_pas, v.pas_se, v.psi, v.psi_se
        info["pas"] = "exact"
    else:
        # a tail with no closed form (BERT): Hessian PAS, checked against exact PAS on random pairs
        v, phi_pas, psi, psi_se, more = hessian_valuations(cache, agreement_pairs, progress)
        pas_se = None
        info.update(more)
    if v.psi is None:
        v.psi, v.psi_se = psi, psi_se
    mats = {"phi_oca": v.phi_oca, "oca_se": np.asarray(oca_se(cache.W_down, N)), "phi_pas": phi_pas, "psi": psi}
    if pas_se is not None:
        mats["pas_se"] = pas_se
    if psi_se is not None:
        mats["psi_se"] = psi_se
    info["timings"] = v.timings
    return v, mats, info


def hessian_valuations(cache: LayerCache, agreement_pairs: int, progress: bool = False
                       ) -> tuple[Valuations, np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """OCA, Hessian PAS and exact psi of a cache whose tail is not norm + linear head (BERT: post-LN + pooler +
    classifier): it has no closed form and direct exact PAS on all n^2/2 pairs costs hours on CPU, so the
    partition uses the Hessian PAS and its agreement with exact PAS is measured on `agreement_pairs` random
    pairs (Pair / Ratio then come from exact pair ablations, `exact_pair_means`).
    Returns (valuations with OCA, phi_pas, psi, psi_se, info)."""
    from hedonic_neurons.valuations.pas import hessian_pas

    n = cache.n_players
    info: dict[str, Any] = {}
    v = valuations_from_cache(cache, ("oca",), progress=progress)
    kw = cache.math_kwargs()
    t = time.perf_counter()
    phi_pas = hessian_pas(kw["H"], kw["coef"], kw["C"], cache.tail.logit_torch, None,
                          C_base=kw.get("C_base"), coef_base=kw.get("coef_base"), progress=progress)
    psi, psi_se = exact_singles(cache)
    rng = np.random.default_rng(0)
    m = min(agreement_pairs, n * (n - 1) // 2)
    i = rng.integers(0, n, size=m)
    j = (i + rng.integers(1, n, size=m)) % n
    (pi, pj), vals, _ = exact_pas_pairs(cache, (np.minimum(i, j), np.maximum(i, j)), progress=False)
    hv = phi_pas[pi, pj]
    corr = float(np.corrcoef(vals, hv)[0, 1]) if vals.std() > 0 and hv.std() > 0 else float("nan")
    info.update(pas="hessian (exact agreement on random pairs)", agreement_pairs=int(m),
                agreement_pearson=corr, hessian_seconds=round(time.perf_counter() - t, 2))
    log.info("layer %s: Hessian PAS vs exact on %d random pairs: Pearson %.4f", cache.layer, m, corr)
    return v, phi_pas, psi, psi_se, info
