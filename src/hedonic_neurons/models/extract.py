"""Activation extraction with forward hooks, and the per-layer cache the valuation math runs on.

Hooks go only on the layers asked for, and the forward pass is stopped (a private exception raised
from the last hook) once the deepest of them has been read, so layers beyond it cost nothing. Every
readout is taken at the pooling position (last non-pad token for decoders, CLS for BERT). For a
LoRA model the same forward pass gives both the adapted activation g and the base activation
g_base of every MLP channel: g is the down projection's input, g_base is recomputed from the MLP
input with the base (pre-LoRA) weights at the pooling position only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapters import ModelAdapter, get_adapter
from .precision import keep_float64

log = logging.getLogger(__name__)

__all__ = [
    "LayerCache",
    "layer_cache",
    "layer_caches",
    "extract_activations",
    "activation_stats",
    "text_batches",
    "ABLATIONS",
]

ABLATIONS = ("auto", "lora", "zero", "mean")


class _StopForward(Exception):
    """Raised from the deepest hook to end the forward pass early (never escapes this module)."""


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return v
    raise RuntimeError("hooked module was called without a tensor input")


def _as_tensor_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _tqdm(iterable, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=kw.pop("disable", False) or bool(os.environ.get("TQDM_DISABLE")), **kw)


def text_batches(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    targets: Sequence[int] | None = None,
    sort_by_length: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Tokenised, padded batches (dicts of tensors) for `texts`; `targets` go in "labels".

    With `sort_by_length` texts of similar length share a batch (less padding, a faster pass); each
    batch then carries an "index" tensor of original positions, and `extract_activations` /
    `layer_cache` return rows in the original order of `texts`.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string: wrap it in a list")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = list(texts)
    order = np.arange(len(texts))
    if sort_by_length and len(texts) > batch_size:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
    out = []
    for s in range(0, len(texts), batch_size):
        idx = order[s:s + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        b = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if targets is not None:
            b["labels"] = torch.as_tensor(np.asarray(targets)[idx], dtype=torch.long)
        if sort_by_length and len(texts) > batch_size:
            b["index"] = torch.as_tensor(idx, dtype=torch.long)
        out.append(b)
    return out


def _split_samples(batch: Any) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """(the batch without its per-sample keys, {sample_row, sample_pos, sample_text} or None).

    Sample batches (`models.targets`) read several positions of a sequence: sample k is row ``sample_row[k]``
    at position ``sample_pos[k]``; "labels" and "index" are then per sample too."""
    if not isinstance(batch, Mapping) or not any(k in batch for k in _SAMPLE_KEYS):
        return batch, None
    info = {k: torch.as_tensor(batch[k]).reshape(-1) for k in _SAMPLE_KEYS if batch.get(k) is not None}
    if ("sample_row" in info) != ("sample_pos" in info):
        raise ValueError("a sample batch needs both sample_row and sample_pos: build it with models.targets")
    return {k: v for k, v in batch.items() if k not in _SAMPLE_KEYS}, info


_SAMPLE_KEYS = ("sample_row", "sample_pos", "sample_text")


def _prepare(batch: Any, device: torch.device) -> tuple[tuple, dict, Any, Any]:
    """(positional args, keyword args, targets, original row positions or None) of one batch: a dict of
    model inputs (with optional "labels" and "index"), an (x, y) pair, or a tensor."""
    if isinstance(batch, Mapping):
        kw = {k: v for k, v in batch.items() if k not in _SAMPLE_KEYS}
        index = kw.pop("index", None)
        targets = kw.pop("labels", None)
        if targets is None:
            targets = kw.pop("targets", None)
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        return (), kw, targets, index
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return (torch.as_tensor(x).to(device),), {}, torch.as_tensor(y), None
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return (torch.as_tensor(batch).to(device),), {}, None, None
    raise ValueError(
        f"cannot use a batch of type {type(batch).__name__}: give dicts of model inputs (e.g. from "
        "text_batches), (x, y) pairs or tensors"
    )


def _check_finite(name: str, t: torch.Tensor, layer: int) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(
            f"non-finite values (NaN/inf) in {name} at layer {layer}: check the inputs and the model weights "
            "(a float16 model may overflow; load it in float32)"
        )


class _Probe:
    """Hooks on the chosen layers that read H, g (and g_base) at the pooling position of each sample."""

    def __init__(self, adapter: ModelAdapter, layers: Sequence[int], site: str, want_base: bool,
                 want_x: bool = False):
        self.adapter = adapter
        self.layers = sorted(set(layers))
        self.site = site
        self.want_base = want_base
        self.want_x = want_x
        self.idx: torch.Tensor | None = None
        self.sel: tuple[torch.Tensor, torch.Tensor] | None = None  # (rows, positions) of a sample batch
        self.out: dict[int, dict[str, torch.Tensor]] = {}
        self.handles: list[Any] = []

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 3 and self.sel is not None:
            rows, pos = self.sel
            return t[rows.to(t.device), pos.to(t.device)]
        if t.ndim == 3:
            idx = self.idx.to(t.device) if self.idx is not None else torch.full(
                (t.shape[0],), t.shape[1] - 1, device=t.device)
            return t[torch.arange(t.shape[0], device=t.device), idx]
        return t

    def __enter__(self) -> _Probe:
        a = self.adapter
        last = self.layers[-1]
        for layer in self.layers:
            # H and any extra reads of the adapter (post-norm blocks: the layer output); the last of them
            # in the forward pass (the layer output, when read) ends it
            reads = {"H": a.residual_spec(layer, self.site), **a.extra_reads(layer, self.site)}
            for key, (path, where) in reads.items():
                mod = a.module(path)
                stop = layer == last and (key != "H" or len(reads) == 1)

                if where == "output":
                    def hook(m, args, out, layer=layer, stop=stop, key=key):
                        self.out[layer][key] = self._pool(_as_tensor_out(out)).detach()
                        if stop:
                            raise _StopForward
                    self.handles.append(mod.register_forward_hook(hook))
                else:
                    def pre(m, args, kwargs, layer=layer, stop=stop, key=key):
                        self.out[layer][key] = self._pool(_first_tensor(args, kwargs)).detach()
                        if stop:
                            raise _StopForward
                    self.handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))

            if self.site == "mlp":
                down = a.mlp_modules(layer)["down"]

                def down_pre(m, args, kwargs, layer=layer):
                    self.out[layer]["acts"] = self._pool(_first_tensor(args, kwargs)).detach()
                self.handles.append(down.register_forward_pre_hook(down_pre, with_kwargs=True))

                if self.want_base or self.want_x:
                    def mlp_pre(m, args, kwargs, layer=layer):
                        x = self._pool(_first_tensor(args, kwargs)).detach()
                        if self.want_x:
                            self.out[layer]["x"] = x
                        if self.want_base:
                            self.out[layer]["acts_base"] = a.mlp_activation(layer, x, base=True).detach()
                    self.handles.append(
                        a.module(a.mlp_input_path(layer)).register_forward_pre_hook(mlp_pre, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def run(self, model: nn.Module, args: tuple, kwargs: dict,
            sel: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[int, dict[str, torch.Tensor]]:
        self.out = {layer: {} for layer in self.layers}
        self.sel = sel
        seq_len = None
        for v in list(args) + list(kwargs.values()):
            if isinstance(v, torch.Tensor) and v.ndim >= 2:
                seq_len = v.shape[1]
                break
        self.idx = self.adapter.pool_index(kwargs, seq_len or 1) if self.adapter.pooling != "none" else None
        try:
            model(*args, **kwargs)
        except _StopForward:
            pass
        missing = [la for la in self.layers if "H" not in self.out[la]]
        if missing:
            raise RuntimeError(f"the forward pass never reached layer(s) {missing}: the adapter's module paths "
                               "do not match this model")
        return self.out


def _iter_readouts(model: nn.Module, batches: Iterable[Any], layers: Sequence[int], site: str, *,
                   want_base: bool, device: str | torch.device, progress: bool, desc: str):
    """Yield (per-layer readouts, targets) batch by batch, with the model in eval mode and no grad."""
    adapter = get_adapter(model)
    for layer in layers:
        adapter.check_layer(layer, site)
    base = adapter.model
    device = torch.device(device)
    from .placement import input_device, is_dispatched

    p = next(base.parameters(), None)
    if is_dispatched(base):
        # accelerate placed the layers (device_map): inputs go where the first block sits, each block moves them on
        device = input_device(base)
    elif p is not None and p.device.type != device.type:
        raise ValueError(f"the model is on {p.device} but device={str(device)!r}: move it first "
                         f"(model.to({str(device)!r})) or pass device={p.device.type!r}")
    was_training = base.training
    base.eval()
    kwargs_extra = {"use_cache": False} if adapter.pooling == "last" else {}
    # a float64 model runs in float64 throughout (HF's RMSNorms would otherwise compute in float32)
    f64 = keep_float64() if p is not None and p.dtype == torch.float64 else contextlib.nullcontext()
    try:
        with torch.no_grad(), f64, _Probe(adapter, layers, site, want_base) as probe:
            total = len(batches) if hasattr(batches, "__len__") else None
            for batch in _tqdm(batches, desc=desc, total=total, disable=not progress):
                batch, info = _split_samples(batch)
                args, kw, targets, index = _prepare(batch, device)
                sel = None if info is None or "sample_row" not in info else (info["sample_row"], info["sample_pos"])
                out = probe.run(base, args, {**kw, **kwargs_extra}, sel)
                for layer, d in out.items():
                    for name, t in d.items():
                        _check_finite(name, t, layer)
                rows = next(iter(next(iter(out.values())).values())).shape[0]
                pos = sel[1] if sel is not None else probe.idx
                yield out, targets, index, {
                    "text": None if info is None else info.get("sample_text"),
                    "pos": None if pos is None else torch.as_tensor(pos).reshape(-1)[:rows].cpu(),
                    "sample": sel is not None}
    finally:
        base.train(was_training)


def extract_activations(
    model: nn.Module,
    batches: Iterable[Any],
    layers: int | Sequence[int],
    *,
    site: str = "mlp",
    base: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict[int, dict[str, np.ndarray]]:
    """Per layer: {"H": (N, d) residual, "acts": (N, n) adapted MLP activations, "acts_base" (LoRA),
    "targets", "sample_text", "sample_pos"} at the readout position of each sample (the pooling position,
    or each (row, position) of a sample batch from `models.targets`). `base=None` reads base activations
    when the layer has LoRA."""
    return _extract(model, batches, layers, site=site, base=base, device=device, dtype=dtype, progress=progress)[0]


def _extract(model, batches, layers, *, site, base, device, dtype, progress):
    """`extract_activations` and whether the batches were sample batches (several positions per text)."""
    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    adapter = get_adapter(model)
    if base is None:
        base = site == "mlp" and any(adapter.has_lora(la) for la in layers if la in adapter.layer_range(site))
    acc: dict[int, dict[str, list[torch.Tensor]]] = {la: {} for la in layers}
    tgt: list[torch.Tensor] = []
    positions: list[torch.Tensor | None] = []
    texts: list[torch.Tensor | None] = []
    pos: list[torch.Tensor | None] = []
    sample_batches = []
    n_rows = 0
    for out, targets, index, info in _iter_readouts(model, batches, layers, site, want_base=bool(base), device=device,
                                              progress=progress, desc=f"activations L{','.join(map(str, layers))}"):
        for layer, d in out.items():
            for name, t in d.items():
                acc[layer].setdefault(name, []).append(t.to("cpu", dtype))
        if targets is not None:
            tgt.append(torch.as_tensor(targets).reshape(-1).cpu())
        positions.append(index)
        rows = next(iter(next(iter(out.values())).values())).shape[0]
        # the text of each row: the sample's own, else the row's original position (or its running count)
        texts.append(info["text"] if info["text"] is not None else
                     (torch.as_tensor(index).reshape(-1) if index is not None else torch.arange(n_rows, n_rows + rows)))
        pos.append(info["pos"])
        sample_batches.append(info["sample"])
        n_rows += rows
    # batches sorted by length carry their rows' original positions: put the rows back in order
    order = None
    if positions and all(p is not None for p in positions):
        order = torch.argsort(torch.cat([torch.as_tensor(p).reshape(-1) for p in positions]))
    elif any(p is not None for p in positions):
        raise ValueError("some batches carry an 'index' and some do not: build them all with one text_batches call")
    result: dict[int, dict[str, np.ndarray]] = {}
    for layer, d in acc.items():
        result[layer] = {name: (torch.cat(v) if order is None else torch.cat(v)[order]).numpy()
                         for name, v in d.items()}
        if site == "residual":
            result[layer]["acts"] = result[layer]["H"]
        if tgt:
            t_all = torch.cat(tgt) if order is None else torch.cat(tgt)[order]
            result[layer]["targets"] = t_all.numpy().astype(np.int64)
        if texts:
            t_all = torch.cat(texts) if order is None else torch.cat(texts)[order]
            result[layer]["sample_text"] = t_all.numpy().astype(np.int64)
        if pos and all(p is not None for p in pos):
            p_all = torch.cat(pos) if order is None else torch.cat(pos)[order]
            result[layer]["sample_pos"] = p_all.numpy().astype(np.int64)
    return result, any(sample_batches)


def activation_stats(
    model: nn.Module,
    batches: Iterable[Any],
    layers: int | Sequence[int],
    *,
    site: str = "mlp",
    key: str = "acts",
    stats: dict[int, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[int, Any]:
    """Streaming float64 `RunningStats` of the activations (`key`: "acts", "acts_base" or "H") per layer.

    Nothing is kept per sample, so N can grow without bound; pass `stats` back in to keep adding.
    """
    from ..valuations.activations import RunningStats

    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    stats = {} if stats is None else stats
    for out, _, _, _ in _iter_readouts(model, batches, layers, site, want_base=(key == "acts_base"), device=device,
                                    progress=progress, desc="activation stats"):
        for layer, d in out.items():
            x = d["H"] if (key == "H" or site == "residual") else d[key]
            x = x.detach().to("cpu", torch.float64).numpy()
            if layer not in stats:
                stats[layer] = RunningStats(x.shape[1])
            stats[layer].update(x)
    return stats


@dataclass
class LayerCache:
    """Everything the valuation math needs for one layer, per sample at the pooling position.

    A sample is one readout position of one text (``sample_text``, ``sample_pos``): the pooling position, or
    every position with an observed next token for a causal LM. Player i's ablation subtracts
    delta_i(x) = coef[x, i] C[:, i] - coef_base[x, i] C_base[:, i] from H[x], and the local logit of the
    ablated model is tail(H - sum_{i in S} delta_i): only the tail is re-run, never the whole model.
    ``ablation``: "lora" (revert the LoRA change of the channel: coef = g - g_base, and for a LoRA on
    the down projection C_base = Delta W_down, coef_base = -g_base), "zero" (coef = g) or "mean"
    (coef = g - mean g over these samples).
    """

    layer: int
    site: str
    H: np.ndarray
    coef: np.ndarray
    C: np.ndarray
    tail: Any
    acts: np.ndarray
    ablation: str
    acts_base: np.ndarray | None = None
    C_base: np.ndarray | None = None
    coef_base: np.ndarray | None = None
    targets: np.ndarray | None = None
    W_down: np.ndarray | None = None
    W_oca: np.ndarray | None = None  # OCA's weight term: W_down (MLP site), the adapter's residual_readers, or None
    meta: dict = field(default_factory=dict)
    sample_text: np.ndarray | None = None  # (N,) the text each sample comes from (split halves by text, never by row)
    sample_pos: np.ndarray | None = None  # (N,) the token position read (None: vector inputs)
    target_tokens: np.ndarray | None = None  # next-token target: the vocabulary id behind each target index

    @property
    def n_samples(self) -> int:
        return int(self.H.shape[0])

    @property
    def n_players(self) -> int:
        return int(self.coef.shape[1])

    @property
    def sample_target(self) -> np.ndarray | None:
        """(N,) the class or vocabulary token whose logit each sample reads (None: a scalar head)."""
        t = getattr(self.tail, "class_targets", None) if getattr(self.tail, "sample_indexed", False) else self.targets
        if t is None:
            return None
        t = np.asarray(t, dtype=np.int64)
        return t if self.target_tokens is None else np.asarray(self.target_tokens)[t]

    def delta(self, players: Sequence[int] | np.ndarray) -> np.ndarray:
        """Sum over `players` of delta_i(x), shape (N, d): what ablating them subtracts from H."""
        S = np.asarray(players, dtype=np.int64).reshape(-1)
        d = self.coef[:, S] @ self.C[:, S].T
        if self.C_base is not None:
            d = d - self.coef_base[:, S] @ self.C_base[:, S].T
        return d

    def local_logit(self, ablate: Sequence[int] | None = None) -> np.ndarray:
        """tail(H) (N,), or tail(H - sum_{i in ablate} delta_i) when players are ablated."""
        H = self.H if ablate is None or len(ablate) == 0 else self.H - self.delta(ablate)
        return np.asarray(self.tail.logit(H, self.targets))

    def math_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `exact_pas` / `hessian_pas` (H, coef, C, tail, targets and the base terms)."""
        kw = {"H": self.H, "coef": self.coef, "C": self.C, "tail": self.tail, "targets": self.targets}
        if self.C_base is not None:
            kw.update(C_base=self.C_base, coef_base=self.coef_base)
        return kw


def layer_cache(
    model: nn.Module,
    batches: Iterable[Any],
    layer: int,
    *,
    site: str = "mlp",
    ablation: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> LayerCache:
    """Run the model up to `layer` on `batches` and cache H, coef, C, tail, acts (see `LayerCache`).

    ``ablation="auto"`` reverts LoRA for a layer with LoRA on its MLP and zero-ablates otherwise. A causal LM
    (next-token target) needs sample batches from `models.targets.target_batches` / `samples_for_target`.
    """
    return layer_caches(model, batches, [layer], site=site, ablation=ablation, device=device, dtype=dtype,
                        progress=progress)[int(layer)]


def layer_caches(
    model: nn.Module,
    batches: Iterable[Any],
    layers: Sequence[int],
    *,
    site: str = "mlp",
    ablation: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict[int, LayerCache]:
    """`layer_cache` of several layers from ONE forward pass over `batches` (hooks on all of them, stopped
    after the deepest): {layer: LayerCache}. ``ablation="auto"`` is decided per layer (LoRA there or not)."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r} is unknown: use one of {ABLATIONS}")
    adapter = get_adapter(model)
    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not layers:
        raise ValueError("no layers asked for: give at least one layer")
    layers = [adapter.check_layer(la, site) for la in layers]
    abl = {}
    for la in layers:
        lora = site == "mlp" and adapter.has_lora(la)
        a = ("lora" if lora else "zero") if ablation == "auto" else ablation
        if a == "lora" and not lora:
            raise ValueError(
                f"ablation='lora' needs LoRA on the MLP of layer {la}, and there is none: use ablation='zero' "
                "or 'mean', or wrap the model with a LoRA adapter on that layer (models.lora_config)"
            )
        if site == "residual" and a == "lora":
            raise ValueError("the residual site has no LoRA ablation: use ablation='zero' or 'mean'")
        abl[la] = a
    outs, sampled = _extract(model, batches, sorted(set(layers)), site=site,
                             base=any(a == "lora" for a in abl.values()), device=device, dtype=dtype,
                             progress=progress)
    lm = bool(getattr(adapter, "head_is_lm", False))
    if lm and not sampled:
        raise ValueError("this is a causal LM: its local logit is the next token's, read at every position with "
                         "an observed next token; build the batches with models.targets.target_batches(..., "
                         "target='next-token') (or samples_for_target), or call compute_valuations")
    return {la: _build_cache(adapter, outs[la], la, site, abl[la], dtype, lm) for la in layers}


def _build_cache(adapter: ModelAdapter, out: dict, layer: int, site: str, ablation: str, dtype: torch.dtype,
                 lm: bool) -> LayerCache:
    if "H" not in out or out["H"].shape[0] == 0:
        raise ValueError("no inputs: `batches` was empty")
    H = out["H"]
    np_dtype = H.dtype
    acts = out["acts"]
    acts_base = out.get("acts_base") if ablation == "lora" else None
    C_base = coef_base = None
    W_down = None
    from .placement import onloaded

    if site == "mlp":
        with onloaded(adapter.model, adapter.mlp_modules(layer)["down"]):  # offloaded weights (device_map)
            W, dW = adapter.down_weights(layer)
        W_down = W.detach().to("cpu", dtype).numpy()
        C = W_down
        if ablation == "lora":
            coef = acts - acts_base
            if dW is not None:
                C_base = dW.detach().to("cpu", dtype).numpy()
                coef_base = -acts_base
        elif ablation == "zero":
            coef = acts.copy()
        else:
            coef = acts - acts.mean(0, keepdims=True, dtype=np.float64).astype(np_dtype)
    else:
        C = np.eye(H.shape[1], dtype=np_dtype)
        coef = H.copy() if ablation == "zero" else H - H.mean(0, keepdims=True, dtype=np.float64).astype(np_dtype)
    tokens = None
    rows = None
    if lm:
        # only the unembedding rows the samples' next tokens use (a 49k x d float64 head would not fit):
        # targets become indices into `target_tokens`
        tokens, inv = np.unique(out["targets"], return_inverse=True)
        out = {**out, "targets": inv.astype(np.int64).reshape(-1)}
        rows = tokens
    norm, head = adapter.final_norm(), adapter.module(adapter.head_path) if adapter.head_path else None
    with onloaded(adapter.model, norm or nn.Identity()), onloaded(adapter.model, head or nn.Identity()):
        tail = adapter.make_tail(layer, site, out) if rows is None else adapter.make_tail(layer, site, out, rows=rows)
    targets = out.get("targets")
    if getattr(tail, "sample_indexed", False):
        targets = np.arange(H.shape[0])  # a per-sample tail (post-norm blocks): rows are read by sample id
    elif getattr(tail, "n_classes", None) is None:
        targets = None
    elif targets is None:
        raise ValueError(
            f"the head of this model has {tail.n_classes} classes: give targets (batches with 'labels', "
            "or (x, y) pairs; models.targets.target_batches with target='label' or 'predicted') to choose the "
            "logit read at each sample"
        )
    return LayerCache(
        layer=layer, site=site, H=H, coef=coef, C=C, tail=tail, acts=acts, ablation=ablation,
        acts_base=acts_base, C_base=C_base, coef_base=coef_base, targets=targets, W_down=W_down,
        W_oca=W_down if site == "mlp" else adapter.residual_readers(layer),
        meta={"adapter": adapter.name, "pooling": adapter.pooling, "tail_is_norm": adapter.tail_is_norm},
        sample_text=out.get("sample_text"), sample_pos=out.get("sample_pos"), target_tokens=tokens,
    )


def subset_cache(cache, idx: np.ndarray):
    """The layer cache restricted to the samples `idx` (a half of the inputs: split next-token samples by
    `sample_text`, never by row); weights are shared."""
    idx = np.asarray(idx, dtype=np.int64)

    def take(x):
        return None if x is None else x[idx]

    tail, targets = cache.tail, take(cache.targets)
    if getattr(tail, "sample_indexed", False):  # a post-norm tail holds per-sample rows: keep the subset's
        ct = getattr(tail, "class_targets", None)
        tail = dataclasses.replace(tail, R=np.asarray(tail.R)[idx], class_targets=None if ct is None
                                   else np.asarray(ct)[idx])
        targets = np.arange(idx.size)
    return dataclasses.replace(cache, H=cache.H[idx], coef=cache.coef[idx], acts=cache.acts[idx],
                               acts_base=take(cache.acts_base), coef_base=take(cache.coef_base),
                               targets=targets, tail=tail, sample_text=take(cache.sample_text),
                               sample_pos=take(cache.sample_pos), meta=dict(cache.meta))
