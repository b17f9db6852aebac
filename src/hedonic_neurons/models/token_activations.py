"""What a coalition reads and writes, token by token: the material of a coalition card.

* `coalition_token_activations`: the coalition's activation at every token of every text (the mean over its
  members of the MLP channel activation g_i, the down projection's input), all layers in one forward pass.
* `top_examples`: each coalition's top-activating texts, a window of tokens around the peak with the
  activations scaled for shading (the Neuronpedia / SAEDashboard card).
* `direct_effect`: the output tokens the coalition's write promotes and suppresses most when read straight
  through the final norm and the unembedding (the logit lens of its down-projection columns; later layers
  are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["coalition_token_activations", "top_examples", "direct_effect", "direct_effects", "token_strings"]


class _Stop(Exception):
    """Raised from the deepest hook to end the forward pass early (never escapes this module)."""


class _Parts:
    """Where a model's MLP down projections and final norm live: its adapter, or for a language model
    without a classification head (which the adapters refuse) the same module tree read directly."""

    def __init__(self, model: nn.Module):
        from .adapters import get_adapter
        from .lora import unwrap_model

        self.model = unwrap_model(model)
        try:
            a = get_adapter(model)
        except ValueError as exc:
            if not hasattr(self.model, "get_output_embeddings") or self.model.get_output_embeddings() is None:
                raise
            self._from_tree(exc)
            return
        self._layers = a.layer_range("mlp")
        self._down = lambda layer: a.mlp_modules(layer)["down"]
        self.norm = a.final_norm()
        post = getattr(a, "post_mlp_norm", None)
        self._post = (lambda layer: a.module(f"{a.layer_path(layer)}.{post}")) if post else (lambda layer: None)
        self._post_ln = lambda layer: self._read_norm(a, layer)

    @staticmethod
    def _read_norm(a: Any, layer: int) -> nn.Module | None:
        """A post-LN model (BERT) reads H at the input of the layer's own LayerNorm: the norm the write passes."""
        try:
            path, where = a.residual_spec(layer, "mlp")
        except (ValueError, AttributeError):
            return None
        mod = a.module(path) if where == "input" else None
        return mod if isinstance(mod, nn.LayerNorm) else None

    def _from_tree(self, exc: Exception) -> None:
        from .detect import _cfg, _cfg_get, _is_norm, _linear_shape

        base = self.model
        cfg = _cfg(base)
        n_layers = _cfg_get(cfg, "num_hidden_layers", "n_layer", "num_layers")
        d = _cfg_get(cfg, "hidden_size", "n_embd")
        d_ff = _cfg_get(cfg, "intermediate_size", "ffn_dim", "n_inner") or (4 * d if d else None)
        lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers
                 and "lora_" not in n]
        if not lists or d is None:
            raise ValueError(f"cannot find the layers of this model ({exc})") from None
        prefix, layers = lists[0]
        downs = [n for n, m in layers[0].named_modules() if not n.endswith("base_layer")
                 and _linear_shape(m) == (int(d_ff), int(d))]
        if len(downs) != 1:
            raise ValueError(f"cannot find one MLP down projection ({d_ff} -> {d}) in a layer ({exc})") from None
        outside = [m for n, m in base.named_modules() if n and not n.startswith(prefix) and _is_norm(m, int(d))]
        self.norm = outside[-1] if outside else None
        self._layers = range(len(layers))
        self._down = lambda layer: layers[layer].get_submodule(downs[0])
        self._post = lambda layer: None
        self._post_ln = lambda layer: None

    def check(self, layer: int) -> int:
        if not isinstance(layer, (int, np.integer)) or int(layer) not in self._layers:
            raise ValueError(f"layer {layer!r} is out of range for this model: use {self._layers.start}.."
                             f"{self._layers.stop - 1}")
        return int(layer)

    def down(self, layer: int) -> nn.Module:
        return self._down(self.check(layer))

    def post_mlp_norm(self, layer: int) -> nn.Module | None:
        return self._post(self.check(layer))

    def post_ln(self, layer: int) -> nn.Module | None:
        return self._post_ln(self.check(layer))


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token id as the text it stands for, with its leading space kept (" the", not "the"), so that a
    row of tokens reads as the text; special tokens keep their own names, ids without a token read "[id N]"."""
    ids = [int(i) for i in ids]
    toks = tokenizer.convert_ids_to_tokens(ids)
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    out = []
    for i, t in zip(ids, toks, strict=True):
        if t is None:  # an unembedding row the tokenizer has no token for (padded vocabularies)
            out.append(f"[id {i}]")
            continue
        t = str(t)
        if t in special:
            out.append(t)
            continue
        try:
            s = tokenizer.convert_tokens_to_string([t])
        except Exception:  # a tokenizer without it: the raw token
            s = t
        if t[:1] in ("\u2581", "\u0120") and not s.startswith(" "):  # SentencePiece / byte-level BPE space marks
            s = " " + s
        out.append(s)
    return out


def _averaging_matrix(coals: Sequence[np.ndarray], n: int, layer: int) -> torch.Tensor:
    M = torch.zeros((n, len(coals)), dtype=torch.float32)
    for j, c in enumerate(coals):
        m = np.unique(np.asarray(c, dtype=np.int64).ravel())
        if m.size == 0 or m[0] < 0 or m[-1] >= n:
            raise ValueError(f"coalition {j} of layer {layer} has members {m.tolist()} outside 0..{n - 1} (or none)")
        M[torch.as_tensor(m), j] = 1.0 / m.size
    return M


def coalition_token_activations(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int],
    coalitions: Mapping[int, list[np.ndarray]], *, batch_size: int = 16, max_length: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[dict[int, list[np.ndarray]], list[list[str]]]:
    """({layer: [per text a (T_text, n_coalitions) float32 array]}, [per text its T_text token strings]).

    Entry [t, j] is coalition j's activation at token t: the mean over its members of the MLP channel
    activation g_i (the down projection's input), read with a forward pre-hook at every position in one
    forward pass for all layers (stopped after the deepest). Padding is dropped; texts longer than
    `max_length` tokens are truncated.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string: wrap it in a list")
    layers = sorted({int(la) for la in layers})
    missing = [la for la in layers if la not in coalitions]
    if missing:
        raise ValueError(f"no coalitions given for layer(s) {missing}: pass coalitions[layer] for every layer")
    parts = _Parts(model)
    base = parts.model
    from .placement import input_device, is_dispatched

    if is_dispatched(base):  # accelerate placed the layers: inputs go where the first block sits
        device = input_device(base)
    mats = {}
    for la in layers:
        down = parts.down(la)
        n = int(getattr(down, "in_features", None) or down.weight.shape[1])
        mats[la] = _averaging_matrix(coalitions[la], n, la).to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    acts: dict[int, list[np.ndarray]] = {la: [] for la in layers}
    tokens: list[list[str]] = []
    store: dict[int, torch.Tensor] = {}
    deepest = layers[-1] if layers else None
    handles = []
    for la in layers:
        def pre(m, args, kwargs, la=la):
            x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            if mats[la].device != x.device:  # layers placed on several devices (device_map)
                mats[la] = mats[la].to(x.device)
            store[la] = x.detach().to(torch.float32) @ mats[la]
            if la == deepest:
                raise _Stop
        handles.append(parts.down(la).register_forward_pre_hook(pre, with_kwargs=True))
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                chunk = list(texts[s:s + batch_size])
                enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                store.clear()
                try:
                    try:
                        base(**inputs, use_cache=False)  # no key/value cache: one pass, nothing generated
                    except TypeError:
                        base(**inputs)
                except _Stop:
                    pass
                mask = enc["attention_mask"].bool()
                for r in range(len(chunk)):
                    keep = mask[r]
                    tokens.append(token_strings(tokenizer, enc["input_ids"][r][keep].tolist()))
                    for la in layers:
                        acts[la].append(store[la][r][keep.to(store[la].device)].cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        base.train(was_training)
    return acts, tokens


def top_examples(acts_per_text: Sequence[np.ndarray], tokens_per_text: Sequence[Sequence[str]], k: int = 5,
                 context: int = 12) -> list[list[dict]]:
    """Per coalition (column of the arrays), its `k` top-activating texts, best first: {"text": index,
    "peak": the activation at the peak, "peak_pos": the peak's place in the window, "tokens": up to
    `context` tokens either side of the peak, "acts": their activations divided by the largest |activation|
    over the coalition's examples (in [-1, 1], for shading), "scale": that divisor}. One example per text."""
    if len(acts_per_text) != len(tokens_per_text):
        raise ValueError(f"{len(acts_per_text)} activation arrays for {len(tokens_per_text)} token lists: one each")
    if not acts_per_text:
        return []
    n_coal = int(np.asarray(acts_per_text[0]).reshape(len(tokens_per_text[0]), -1).shape[1])
    peaks = np.full((len(acts_per_text), n_coal), -np.inf)
    where = np.zeros((len(acts_per_text), n_coal), dtype=np.int64)
    for t, a in enumerate(acts_per_text):
        a = np.asarray(a, dtype=np.float64)
        if a.shape[0] != len(tokens_per_text[t]):
            raise ValueError(f"text {t}: {a.shape[0]} activation rows for {len(tokens_per_text[t])} tokens")
        if a.shape[0]:
            where[t] = a.argmax(0)
            peaks[t] = a.max(0)
    out = []
    for j in range(n_coal):
        order = [t for t in np.argsort(-peaks[:, j], kind="stable")[:k] if np.isfinite(peaks[t, j])]
        ex = []
        for t in order:
            p = int(where[t, j])
            lo, hi = max(0, p - context), min(len(tokens_per_text[t]), p + context + 1)
            ex.append({"text": int(t), "peak": float(peaks[t, j]), "peak_pos": p - lo,
                       "tokens": [str(x) for x in tokens_per_text[t][lo:hi]],
                       "acts": np.asarray(acts_per_text[t], dtype=np.float64)[lo:hi, j]})
        scale = max((float(np.abs(e["acts"]).max()) for e in ex if len(e["acts"])), default=0.0)
        for e in ex:
            e["acts"] = [round(float(v) / scale, 4) if scale > 0 else 0.0 for v in e["acts"]]
            e["scale"] = scale
        out.append(ex)
    return out


def _unembedding(model: nn.Module) -> tuple[torch.Tensor | None, str]:
    """(the (V, d) unembedding, where it came from) or (None, why there is none)."""
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    if out is not None and getattr(out, "weight", None) is not None:
        return out.weight, "the model's output embeddings (LM head)"
    cfg = getattr(model, "config", None)
    get_in = getattr(model, "get_input_embeddings", None)
    if cfg is not None and getattr(cfg, "tie_word_embeddings", False) and get_in is not None and get_in() is not None:
        return get_in().weight, "the input embeddings (tied to the LM head this classifier was made from)"
    return None, ("no unembedding: the model has no LM head and its input embeddings are not tied to one, so "
                  "the tokens its write promotes cannot be read off")


def direct_effects(model: nn.Module, layer: int, coalitions: Sequence[Any], weights: Sequence[Any] | None = None,
                   k: int = 10, tokenizer: Any = None) -> list[dict[str, Any]]:
    """`direct_effect` for many coalitions of one layer at once (one product with the unembedding)."""
    from ..valuations.tail import norm_params
    from .lora import merged_weight

    parts = _Parts(model)
    E, source = _unembedding(parts.model)
    if E is None:
        return [{"promoted": [], "suppressed": [], "note": source} for _ in coalitions]
    if weights is not None and len(weights) != len(coalitions):
        raise ValueError(f"{len(weights)} weight vectors for {len(coalitions)} coalitions: one per coalition")
    dtype = torch.float64 if E.dtype == torch.float64 else torch.float32
    W = merged_weight(parts.down(layer)).detach().to("cpu", torch.float64)
    V = torch.zeros((W.shape[0], len(coalitions)), dtype=torch.float64)
    for j, members in enumerate(coalitions):
        m = np.unique(np.asarray(members, dtype=np.int64).ravel())
        if m.size == 0 or m[0] < 0 or m[-1] >= W.shape[1]:
            raise ValueError(f"members {m.tolist()} fall outside the {W.shape[1]} channels of layer {layer} (or none)")
        w = (torch.ones(m.size, dtype=torch.float64) if weights is None or weights[j] is None
             else torch.as_tensor(np.asarray(weights[j], dtype=np.float64).ravel()))
        if w.numel() != m.size:
            raise ValueError(f"weights has {w.numel()} entries for {m.size} members: one per member (sorted order)")
        V[:, j] = W[:, torch.as_tensor(m)] @ w
    notes = [f"read through {source}"]
    post = parts.post_mlp_norm(layer)
    if post is not None:  # the write passes this norm's gain before it reaches the residual stream
        _, g_post, _, _ = norm_params(post)
        V = V * torch.as_tensor(g_post)[:, None]
        notes.append("after the post-MLP norm's gain")
    norm = parts.post_ln(layer) or parts.norm
    if norm is not None:
        kind, g, _, _ = norm_params(norm)
        if kind == "layer":
            V = V - V.mean(0, keepdim=True)
        V = V * torch.as_tensor(g)[:, None]
        if norm is not parts.norm:
            notes.append("through the layer's own LayerNorm (post-LN; the layers after it are ignored)")
    else:
        notes.append("no final norm found")
    scores = (E.detach().to(dtype) @ V.to(E.device, dtype)).cpu()  # (vocab, n_coalitions)
    k = int(min(k, scores.shape[0]))
    out = []
    for j in range(len(coalitions)):
        top = torch.topk(scores[:, j], k).indices.tolist()
        bottom = torch.topk(-scores[:, j], k).indices.tolist()

        def named(ids: list[int], j: int = j) -> list[list]:
            toks = token_strings(tokenizer, ids) if tokenizer is not None else [str(i) for i in ids]
            return [[t, float(scores[i, j])] for t, i in zip(toks, ids, strict=True)]

        out.append({"promoted": named(top), "suppressed": named(bottom), "note": "; ".join(notes)})
    return out


def direct_effect(model: nn.Module, layer: int, members, weights=None, k: int = 10, tokenizer: Any = None
                  ) -> dict[str, Any]:
    """{"promoted": [[token, score], ...], "suppressed": [...], "note": str}: the coalition's write direction
    v = W_down[:, members] @ w (w = `weights`, e.g. the members' mean activation at their top-activating
    positions; ones when None) read through the final norm's gain (after centring, for a LayerNorm: its RMS
    scaling is one positive scalar and does not change the ranking) and the unembedding E: scores E (g * P v),
    the top-`k` and bottom-`k` tokens. Later layers are ignored (the direct path only). Without an
    unembedding both lists are empty and ``note`` says why. `direct_effects` does many coalitions at once."""
    return direct_effects(model, layer, [members], None if weights is None else [weights], k, tokenizer)[0]
