"""Self-verification of a valuation run: a few psi(i) and psi(i, j) redone by direct ablation through the
model's own modules and compared with what the valuation math computed.

Why: the valuation math reads the model through an adapter (where the players write, which norm follows,
what the head is). A wrong adapter gives plausible-looking wrong numbers with no error, so every
run checks itself against the real modules:

1. the layer's inputs are captured for a few random samples (one forward pass, stopped at the layer);
2. a float64 copy of the real layer is re-run with the channels ablated by hooks on its own down
   projection (LoRA reverted through the module's own `base_layer` / `lora_A` / `lora_B`, or zeroed /
   set to the mean), and the model's own readout modules (final norm and head, BERT's pooler and
   classifier) are applied to the layer's real output, in float64 with HF's float32 upcasts kept in
   float64 (HF's RMSNorm computes in float32 even in a float64 model);
3. the per-sample local logit, psi(i, x) and Delta_ij(x) are compared with the cached tail's values on the
   same samples, the computed phi / psi with the tail's direct evaluation over all inputs, the activations
   with the real down projection's input, and OCA's weight term with the real down projection's write
   directions (its response to unit inputs).

A disagreement beyond the stated tolerance raises `VerificationError` (one line naming the likely cause
and ``--no-verify``). Nothing here imports the solver.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapters import get_adapter
from .extract import _as_tensor_out, _prepare, _split_samples
from .lora import is_lora_layer
from .precision import keep_float64

log = logging.getLogger(__name__)

__all__ = ["VerificationError", "verify_valuations", "verification_rows", "save_verification", "format_verification",
           "keep_float64",
           "TOLERANCES"]

# Max |computed - direct| / max |direct| over the checked values, per cache precision. float32 caches carry
# ~1e-7 relative rounding in g and H, amplified by g / (g - g_base) for a small LoRA change; a wrong adapter
# gives errors of order 1 (~1.0 for a missing post-MLP norm or final norm).
TOLERANCES = {"float64": 1e-6, "float32": 1e-3}

class VerificationError(ValueError):
    """The computed valuations disagree with direct ablation through the model's modules."""


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _cast(obj: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in a nested args / kwargs structure cast to dtype (masks and ids untouched)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_cast(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [_cast(o, dtype) for o in obj]
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


class _Stop(Exception):
    pass


def _row_map(batches: Sequence[Any]) -> list[tuple[int, int, int | None, int]]:
    """(batch number, row in batch, token position or None, sample in batch) of every cache row, in cache order.

    A sample batch (`models.targets`) reads several positions of a row: its samples are the cache rows."""
    pos: dict[int, tuple[int, int, int | None, int]] = {}
    k = 0
    for b, batch in enumerate(batches):
        batch, info = _split_samples(batch)
        _, kw, _, index = _prepare(batch, torch.device("cpu"))
        if info is not None and "sample_row" in info:
            rows, at = info["sample_row"].tolist(), info["sample_pos"].tolist()
        else:
            n = _batch_size(batch)
            rows, at = list(range(n)), [None] * n
        n = len(rows)
        idx = list(range(k, k + n)) if index is None else [int(i) for i in torch.as_tensor(index).reshape(-1)]
        for s_, (i, r, p_) in enumerate(zip(idx, rows, at, strict=True)):
            pos[i] = (b, int(r), None if p_ is None else int(p_), s_)
        k += n
    return [pos[i] for i in sorted(pos)]


def _sub_batch(batch: Any, items: list[tuple[int, int, int | None, int]]) -> tuple[Any, torch.Tensor | None]:
    """The rows of `batch` behind the chosen samples `items` (cache row, row, position, sample) and, for a
    sample batch, the position each is read at (None: the adapter's pooling position)."""
    plain, info = _split_samples(batch)
    rows = [r for _, r, _, _ in items]
    if info is None or "sample_row" not in info:
        return _select_rows(plain, rows), None
    keep = {k: v for k, v in plain.items() if k not in ("labels", "targets", "index")}
    sub = _select_rows(keep, rows)
    lab = plain.get("labels", plain.get("targets"))
    if lab is not None:
        sub["labels"] = torch.as_tensor(lab)[[s_ for _, _, _, s_ in items]]
    return sub, torch.as_tensor([p_ for _, _, p_, _ in items], dtype=torch.long)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.ndim >= 1:
                return int(v.shape[0])
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return len(batch[0])
    return len(batch)


def _select_rows(batch: Any, rows: list[int]) -> Any:
    if isinstance(batch, dict):
        return {k: (v[rows] if isinstance(v, torch.Tensor) and v.ndim >= 1 else v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return (torch.as_tensor(batch[0])[rows], torch.as_tensor(batch[1])[rows])
    return torch.as_tensor(batch)[rows]


def _lora_modules(mod: nn.Module) -> list[nn.Module]:
    return [m for m in mod.modules() if is_lora_layer(m)]


def _module_rel(adapter, full: str, layer: int) -> str:
    prefix = adapter.layer_path(layer) + "."
    if not full.startswith(prefix):
        raise VerificationError(f"the adapter's module {full} is not inside layer {adapter.layer_path(layer)}: "
                                "self-verification re-runs the layer alone; pass verify=False (--no-verify)")
    return full[len(prefix):]


def _readout_logit(mods: list[nn.Module], h: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    out = h
    for m in mods:
        out = _as_tensor_out(m(out))
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 1:
        return out
    if targets is None:
        raise VerificationError("the readout has several classes but the inputs carry no targets")
    return out.gather(1, targets.long().view(-1, 1).to(out.device))[:, 0]


# ---------------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------------


def verify_valuations(
    model: nn.Module,
    batches: Sequence[Any],
    v: Any,
    *,
    n_players: int = 4,
    n_pairs: int = 3,
    n_samples: int = 3,
    seed: int = 0,
    tol: float | None = None,
    raise_on_fail: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Compare `v` (a `Valuations` with its `cache`) with direct ablation through `model`'s own modules.

    Returns a JSON-ready dict (also set as ``v.verification``): ``passed``, ``tolerance``, per check the
    max relative error, and the checked items. Raises `VerificationError` when a check fails and
    `raise_on_fail`. `batches` must be the batches the cache was built from (re-iterable).
    """
    t0 = time.perf_counter()
    cache = v.cache
    if cache is None:
        raise ValueError("these valuations carry no cache (loaded from disk?): verify right after computing them")
    adapter = get_adapter(model)
    layer, site = cache.layer, cache.site
    n, N = cache.n_players, cache.n_samples
    # a float64 run only when both the model and the cache are float64: a float32 model's cache carries its rounding
    p0 = next(adapter.model.parameters(), None)
    f64_model = p0 is None or p0.dtype == torch.float64
    dt_name = "float64" if cache.H.dtype == np.float64 and f64_model else "float32"
    tol = TOLERANCES[dt_name] if tol is None else float(tol)
    rng = np.random.default_rng(seed)
    batches = list(batches)
    rowmap = _row_map(batches)
    if len(rowmap) != N:
        raise ValueError(f"the batches hold {len(rowmap)} inputs but the cache {N}: pass the same batches")
    xs = np.sort(rng.choice(N, size=min(n_samples, N), replace=False))
    players = np.sort(rng.choice(n, size=min(n_players, n), replace=False))
    pairs: list[tuple[int, int]] = []
    if n >= 2:
        if v.phi_pas is not None:  # the strongest computed synergy is the one a wrong sign would hurt most
            off = np.abs(np.asarray(v.phi_pas, dtype=np.float64))
            np.fill_diagonal(off, -1.0)
            i, j = np.unravel_index(int(np.argmax(off)), off.shape)
            pairs.append((int(min(i, j)), int(max(i, j))))
        # the other pairs are formed from the random players, so that their singles are already runs
        for k in range(0, players.size - 1, 2):
            if len(pairs) >= n_pairs:
                break
            p_ = (int(min(players[k], players[k + 1])), int(max(players[k], players[k + 1])))
            if p_ not in pairs:
                pairs.append(p_)
        while len(pairs) < min(n_pairs, n * (n - 1) // 2):
            i, j = sorted(rng.choice(n, size=2, replace=False).tolist())
            if (i, j) not in pairs:
                pairs.append((i, j))

    # ---- 1. the layer's inputs for the chosen samples ---------------------------------------------
    base = adapter.model
    lay_path = adapter.layer_path(layer)
    lay_mod = adapter.module(lay_path)
    dev = torch.device(device)
    groups: dict[int, list[tuple[int, int, int | None, int]]] = {}
    for x in xs:
        b, r, p_, s_ = rowmap[x]
        groups.setdefault(b, []).append((int(x), r, p_, s_))
    captured = []  # (cache rows, args, kwargs, pool idx, targets, last layer output, model output)
    last_mod = adapter.module(adapter.layer_path(adapter.layer_range(site).stop - 1))
    was_training = base.training
    base.eval()
    kw_extra = {"use_cache": False} if adapter.pooling == "last" else {}
    try:
        for b, items in groups.items():
            sub, at = _sub_batch(batches[b], items)
            args, kw, targets, _ = _prepare(sub, dev)
            store: dict[str, Any] = {}

            def pre(m, a, k, store=store):
                store["args"], store["kwargs"] = _detach(a), _detach(k)

            def last_out(m, a, out, store=store):
                store["last"] = _as_tensor_out(out).detach()

            # the whole forward pass: the layer's inputs, and the last layer's output next to the model's own
            # output (the readout modules must turn the one into the other)
            full = not captured  # one group runs through the whole model (the readout check); the others stop
            if not full:
                def pre(m, a, k, store=store):  # noqa: F811 - the stopping variant
                    store["args"], store["kwargs"] = _detach(a), _detach(k)
                    raise _Stop
            hs = [lay_mod.register_forward_pre_hook(pre, with_kwargs=True)]
            if full:
                hs.append(last_mod.register_forward_hook(last_out))
            f64 = keep_float64() if next(base.parameters()).dtype == torch.float64 else contextlib.nullcontext()
            o = None
            try:
                with torch.no_grad(), f64:
                    o = base(*args, **{**kw, **kw_extra})
            except _Stop:
                pass
            finally:
                for h in hs:
                    h.remove()
            if "args" not in store:
                raise VerificationError(f"the forward pass never reached {lay_path}: the adapter's layer path does "
                                        "not match the model; fix the adapter or pass --no-verify")
            logits = getattr(o, "logits", o)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            if not full:
                logits = None
            seq = None
            for t in list(args) + list(kw.values()):
                if isinstance(t, torch.Tensor) and t.ndim >= 2:
                    seq = t.shape[1]
                    break
            idx = at if at is not None else (adapter.pool_index(kw, seq or 1) if adapter.pooling != "none" else None)
            captured.append(([x for x, _, _, _ in items], store["args"], store["kwargs"], idx,
                             None if targets is None else torch.as_tensor(targets).reshape(-1),
                             store.get("last"), logits.detach() if isinstance(logits, torch.Tensor) else None))
    finally:
        base.train(was_training)

    # ---- 2. float64 copies of the real layer and readout -------------------------------------------
    lay = copy.deepcopy(lay_mod).eval()
    readout = [copy.deepcopy(m).eval() for m in adapter.readout_modules(layer, site)]
    wdt = torch.float64
    try:
        lay.double()
        for m in readout:
            m.double()
    except (RuntimeError, TypeError) as exc:  # quantised weights: stay in the model's precision
        wdt = next(lay_mod.parameters()).dtype
        log.warning("self-verification runs in %s (no float64 copy: %s)", wdt, exc)
        lay = copy.deepcopy(lay_mod).eval()
        readout = [copy.deepcopy(m).eval() for m in adapter.readout_modules(layer, site)]
    for m in _lora_modules(lay):
        if getattr(m, "merged", False):
            m.unmerge()  # the ablation below needs base and LoRA parts apart
    down = None
    mlp_in = None
    if site == "mlp":
        down = lay.get_submodule(_module_rel(adapter, adapter.mlp_module_names(layer)["down"], layer))
        mip = adapter.mlp_input_path(layer)
        mlp_in = lay if mip == lay_path else lay.get_submodule(_module_rel(adapter, mip, layer))
    means = None
    if cache.ablation == "mean":
        # the mean the cache ablated to, read back from its coefficients (coef = X - mean): under torchrun it
        # is the mean over all ranks' inputs, not this shard's
        X = np.asarray(cache.acts if site == "mlp" else cache.H, dtype=np.float64)
        means = torch.as_tensor((X - np.asarray(cache.coef, dtype=np.float64)).mean(0), dtype=wdt)

    def run_layer(args, kwargs, S: Sequence[int], g_base: torch.Tensor | None, want_g: bool = False):
        """The copied layer's output (full sequence) with players S ablated; optionally its down input."""
        S_t = torch.as_tensor(list(S), dtype=torch.long)
        rec: dict[str, torch.Tensor] = {}
        handles = []
        if site == "mlp":
            def down_fwd(m, a, out):
                g = a[0]
                if want_g:
                    rec["g"] = g
                if len(S_t) == 0:
                    return out
                g_rev = g.clone()
                if cache.ablation == "lora":
                    g_rev[..., S_t] = g_base[..., S_t]
                elif cache.ablation == "zero":
                    g_rev[..., S_t] = 0.0
                else:
                    g_rev[..., S_t] = means[S_t].to(g.device, g.dtype)
                if is_lora_layer(m) and not getattr(m, "disable_adapters", False):
                    # the channel's base activation through the base weight; its LoRA column removed ("lora"),
                    # or the full merged column applied to the zeroed / mean value ("zero", "mean")
                    g_keep = g_rev.clone()
                    if cache.ablation == "lora":
                        g_keep[..., S_t] = 0.0
                    new = m.base_layer(g_rev)
                    for name in m.active_adapters:
                        if name in m.lora_A:
                            new = new + m.lora_B[name](m.lora_A[name](m.lora_dropout[name](g_keep))) * m.scaling[name]
                    return new
                return m.forward(g_rev)  # forward(), not __call__: no recursion into this hook
            handles.append(down.register_forward_hook(down_fwd))
        else:
            def out_fwd(m, a, out):
                o = _as_tensor_out(out)
                if len(S_t) == 0:
                    return out
                o = o.clone()
                o[..., S_t] = 0.0 if cache.ablation == "zero" else means[S_t].to(o.device, o.dtype)
                return (o, *out[1:]) if isinstance(out, tuple) else o
            handles.append(lay.register_forward_hook(out_fwd))
        try:
            with torch.no_grad(), keep_float64():
                out = _as_tensor_out(lay(*_cast(args, wdt), **_cast(kwargs, wdt)))
        finally:
            for hd in handles:
                hd.remove()
        return out, rec.get("g")

    def base_g(args, kwargs) -> torch.Tensor:
        """g_base: the down projection's input with LoRA switched off on the MLP's input projections."""
        off = [m for m in _lora_modules(mlp_in) if m is not down]
        rec: dict[str, torch.Tensor] = {}
        hd = down.register_forward_pre_hook(lambda m, a: rec.__setitem__("g", a[0].detach()))
        for m in off:
            m.enable_adapters(False)
        try:
            with torch.no_grad(), keep_float64():
                lay(*_cast(args, wdt), **_cast(kwargs, wdt))
        finally:
            hd.remove()
            for m in off:
                m.enable_adapters(True)
        return rec["g"]

    def pool(h: torch.Tensor, idx) -> torch.Tensor:
        if h.ndim == 3:
            ii = idx if idx is not None else torch.full((h.shape[0],), h.shape[1] - 1)
            return h[torch.arange(h.shape[0]), ii.to(h.device)]
        return h

    singles = sorted(set(int(i) for i in players) | {p for pr_ in pairs for p in pr_})
    configs: list[tuple[int, ...]] = [()] + [(i,) for i in singles] + [tuple(p) for p in pairs]
    real = {c: np.zeros(len(xs)) for c in configs}
    g_real = np.zeros((len(xs), players.size))
    row_of = {int(x): k for k, x in enumerate(xs)}
    for rows, args, kwargs, idx, targets, _, _ in captured:
        gb = base_g(args, kwargs) if (site == "mlp" and cache.ablation == "lora") else None
        k_rows = [row_of[x] for x in rows]
        for c in configs:
            out, g = run_layer(args, kwargs, c, gb, want_g=(c == () and site == "mlp"))
            with torch.no_grad(), keep_float64():
                lg = _readout_logit(readout, pool(out, idx), targets)
            real[c][k_rows] = lg.double().cpu().numpy()
            if g is not None:
                g_real[k_rows] = pool(g, idx)[:, torch.as_tensor(players)].double().cpu().numpy()

    # ---- 3. the cache's values on the same samples -----------------------------------------------
    # in float64 (as the valuation math does): a float32 l - l_i - l_j + l_ij would be rounding noise
    H64 = np.asarray(cache.H, dtype=np.float64)

    def delta64(S: Sequence[int], rows: Any = slice(None)) -> np.ndarray:
        S = list(S)
        out = np.asarray(cache.coef[rows][:, S], np.float64) @ np.asarray(cache.C[:, S], np.float64).T
        if cache.C_base is not None:
            out -= np.asarray(cache.coef_base[rows][:, S], np.float64) @ np.asarray(cache.C_base[:, S], np.float64).T
        return out

    tgt = None if cache.targets is None else np.asarray(cache.targets)[xs]
    Hx = H64[xs]

    def tail_at(S: Sequence[int], rows=xs, H=Hx, t=tgt) -> np.ndarray:
        if not S:
            return np.asarray(cache.tail.logit(H, t), dtype=np.float64)
        return np.asarray(cache.tail.logit(H - delta64(S, rows), t), dtype=np.float64)

    comp = {c: tail_at(c) for c in configs}
    checks: dict[str, dict] = {}

    def record(name: str, computed: np.ndarray, direct: np.ndarray, what: str, cause: str, floor: float = 0.0):
        computed, direct = np.asarray(computed, np.float64), np.asarray(direct, np.float64)
        scale = max(float(np.abs(direct).max(initial=0.0)), floor, 1e-300)
        err = float(np.abs(computed - direct).max(initial=0.0)) / scale
        checks[name] = {"max_rel_err": err, "scale": scale, "n_values": int(direct.size), "passed": err <= tol,
                        "what": what, "cause": cause}

    # the readout modules reproduce the model's own output from its last layer (a final norm left out, a wrong
    # head or readout position show here; everything below trusts these modules)
    ro_mine, ro_model = [], []
    for _rows, _, _, idx, targets, last, logits in captured:
        if last is None or logits is None:
            continue
        with torch.no_grad(), keep_float64():
            ro_mine.append(_readout_logit(readout, pool(last.to(wdt), idx), targets).double().cpu().numpy())
        lg = pool(logits, idx) if logits.ndim == 3 else logits  # a language model: logits at every position
        lg = lg if lg.ndim == 2 else lg[:, None]
        lg = lg[:, 0] if lg.shape[1] == 1 else lg.gather(1, targets.long().view(-1, 1))[:, 0]
        ro_model.append(lg.double().cpu().numpy())
    if ro_mine:
        record("readout", np.concatenate(ro_mine), np.concatenate(ro_model),
               "the adapter's readout (final norm + head) on the last layer vs the model's own output",
               "the adapter's final norm, head or readout position is not the model's (a final norm missing, "
               "a wrong head, or another pooling position)")
    l0r, l0c = real[()], comp[()]
    lscale = float(np.abs(l0r).max(initial=0.0))
    tail_desc = getattr(cache.tail, "kind", type(cache.tail).__name__)
    record("local_logit", l0c, l0r, "local logit head(final_norm(h_l)) per sample",
           f"the tail ({tail_desc}) does not reproduce the model's readout: wrong final norm (e.g. a (1 + w) "
           "RMSNorm read as w), head or readout position")
    if site == "mlp":
        record("activations", cache.acts[np.ix_(xs, players)], g_real, "activations g at the readout position",
               "the adapter reads the players somewhere else than the down projection's input, or at another "
               "position")
    floor = 1e-10 * max(lscale, 1.0)
    single_r = np.stack([l0r - real[(int(i),)] for i in players]) if players.size else np.zeros((0, len(xs)))
    single_c = np.stack([l0c - comp[(int(i),)] for i in players]) if players.size else np.zeros((0, len(xs)))
    record("psi_per_sample", single_c, single_r, "psi(i, x) = l(x) - l_-i(x) per sample",
           "an ablation's path to the readout differs from the model's: e.g. a norm after the MLP "
           "(post_feedforward_layernorm) missing from the tail, or the wrong ablation semantics", floor)
    pair_r = np.zeros((0, len(xs)))
    if pairs:
        pr = [l0r - real[(i,)] - real[(j,)] + real[(i, j)] for i, j in pairs]
        pc = [l0c - comp[(i,)] - comp[(j,)] + comp[(i, j)] for i, j in pairs]
        pair_r = np.stack(pr)
        record("pas_per_sample", np.stack(pc), pair_r, "Delta_ij(x) = l - l_-i - l_-j + l_-ij per sample",
               "pair ablations reach the readout differently in the model: e.g. a norm after the MLP "
               "(post_feedforward_layernorm) missing from the tail, or a (1 + w) norm read as w", floor)

    # ---- 4. computed phi / psi vs the tail's direct evaluation over all inputs -------------------------
    tgt_all = cache.targets
    l_all = np.asarray(cache.tail.logit(H64, tgt_all), dtype=np.float64)
    full_single = {}
    for i in set([int(p) for p in players] + [p for pr_ in pairs for p in pr_]):
        full_single[i] = l_all - np.asarray(cache.tail.logit(H64 - delta64([i]), tgt_all), np.float64)
    if v.psi is not None and players.size:
        record("psi", np.asarray(v.psi)[players], [full_single[int(i)].mean() for i in players],
               "computed psi(i) vs the tail evaluated directly over all inputs",
               "the valuation math disagrees with its own tail (a bug: please report it)",
               1e-12 * max(lscale, 1.0))
    if v.phi_pas is not None and pairs:
        direct = []
        for i, j in pairs:
            lij = np.asarray(cache.tail.logit(H64 - delta64([i, j]), tgt_all), np.float64)
            direct.append(np.mean(full_single[i] + full_single[j] - (l_all - lij)))
        record("phi_pas", [v.phi_pas[i, j] for i, j in pairs], direct,
               "computed exact PAS phi_ij vs the tail evaluated directly over all inputs",
               "the valuation math disagrees with its own tail (a bug: please report it)",
               1e-12 * max(lscale, 1.0))

    # ---- 5. OCA's weight term = the real down projection's write directions ----------------------------
    if site == "mlp" and cache.W_down is not None and players.size:
        dn = down
        pdev = next(dn.parameters()).device
        # an offloaded (meta) down projection: accelerate's hook moves the inputs to where it runs
        E = torch.zeros((players.size, n), dtype=wdt, device="cpu" if pdev.type == "meta" else pdev)
        E[torch.arange(players.size), torch.as_tensor(players)] = 1.0  # one unit input per checked player
        with torch.no_grad(), keep_float64():
            cols = (_as_tensor_out(dn(E)) - _as_tensor_out(dn(torch.zeros_like(E)))).double().cpu().numpy()
        record("oca_weight", np.asarray(cache.W_down, np.float64)[:, players].T, cols,
               "OCA weight term W_down[:, i] vs the down projection's response to unit inputs",
               "the adapter's W_down is not the down projection's effective weight (fused, transposed or "
               "LoRA not merged)")

    passed = all(c["passed"] for c in checks.values())
    failed = [k for k, c in checks.items() if not c["passed"]]
    res = {
        "passed": passed, "tolerance": tol, "precision": {"cache": dt_name, "direct": str(wdt).replace("torch.", "")},
        "layer": int(layer), "site": site, "ablation": cache.ablation, "samples": [int(x) for x in xs],
        "players": [int(p) for p in players], "pairs": [list(p) for p in pairs],
        "checks": checks, "failed": failed, "seconds": round(time.perf_counter() - t0, 3),
        "values": {
            "psi_direct": {str(int(i)): float(full_single[int(i)].mean()) for i in players},
            "phi_computed": {f"{i},{j}": float(v.phi_pas[i, j]) for i, j in pairs} if v.phi_pas is not None else {},
            "pas_per_sample_direct": {f"{i},{j}": [float(a) for a in row]
                                      for (i, j), row in zip(pairs, pair_r, strict=True)}
            if pairs else {},
        },
    }
    v.verification = res
    log.info("self-verification layer %s: %s (worst %s, %.2f s)", layer, "passed" if passed else "FAILED",
             max(((k, f"{c['max_rel_err']:.1e}") for k, c in checks.items()), key=lambda kv: float(kv[1]),
                 default=None), res["seconds"])
    if not passed and raise_on_fail:
        k = failed[0]
        c = checks[k]
        raise VerificationError(
            f"self-verification failed at layer {layer}: {c['what']} differs from direct ablation through the "
            f"model's modules by {c['max_rel_err']:.1e} relative (tolerance {tol:.0e}); likely cause: {c['cause']}. "
            "Fix the adapter (docs/models.md, --adapter module:Class) or pass --no-verify (verify=False) to keep "
            "these numbers unverified")
    return res


def verification_rows(res: dict) -> list[dict]:
    """One row per check (for a CSV / the report's table)."""
    return [{"check": k, "what": c["what"], "max_rel_err": f"{c['max_rel_err']:.2e}",
             "tolerance": f"{res['tolerance']:.0e}", "values": c["n_values"], "passed": "yes" if c["passed"] else "NO"}
            for k, c in res["checks"].items()]


def save_verification(res: dict, directory: Any, stem: str = "verification") -> None:
    """Write `stem`.json (everything) and `stem`.csv (one row per check) into `directory`."""
    import csv
    import json
    from pathlib import Path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stem}.json").write_text(json.dumps(res, indent=2, default=float))
    rows = verification_rows(res)
    with open(d / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["check"])
        w.writeheader()
        w.writerows(rows)


def format_verification(res: dict) -> str:
    """A few lines for the terminal: the verdict and the worst relative error per check."""
    head = (f"  self-verification ({len(res['samples'])} inputs, {len(res['players'])} players, {len(res['pairs'])} "
            f"pairs, {res['precision']['direct']} direct ablation through the model's modules, "
            f"{res['seconds']:.1f} s): {'passed' if res['passed'] else 'FAILED'} (tolerance {res['tolerance']:.0e})")
    lines = [head] + [f"    {k:15s} max rel. err {c['max_rel_err']:.1e}  {'ok' if c['passed'] else 'FAILED'}"
                      for k, c in res["checks"].items()]
    return "\n".join(lines)
