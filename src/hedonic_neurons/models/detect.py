"""Architectures found from the model, not from a list of names.

`inspect_structure(model)` reads the module tree (it works on a model built on the meta device, so support
is decided before any weight is loaded): the list of layers, the MLP's projections by their shapes
(gate/up/down, fc1/fc2, a fused gate_up as in Phi-3), the norms of a layer, the final norm and the head.
`AutoDecoderAdapter` turns that into a `ModelAdapter`; with real weights it then *probes* the model:

- the MLP formula: which of down(act(gate x) * up x), down(act(up x) * gate x), for a fused projection
  which half is the gate, reproduces the MLP module's own output;
- the MLP output's path into the layer output: added to the residual (pre-norm or parallel residual:
  LLaMA, Mistral, Qwen2/3, Phi-3, GPT-NeoX) or normalised first by one of the layer's norms (post-MLP norm:
  Gemma-2's ``post_feedforward_layernorm``, OLMo-2), by perturbing the MLP output inside the real layer;
- the final norm's parametrisation (RMSNorm with gain w or 1 + w, LayerNorm) by evaluating it.

Anything that does not fit raises a one-line ValueError naming what was found and the fix (``--adapter
module:Class``). `check_supported(path)` does the structural part from a config only (meta device).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapters import _REGISTRY, ModelAdapter, _resolve_head
from .lora import base_output, is_lora_layer, unwrap_model

log = logging.getLogger(__name__)

__all__ = ["inspect_structure", "AutoDecoderAdapter", "check_supported", "detect_adapter", "load_adapter_class",
           "use_adapter"]


def _linear_shape(m: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a Linear or a LoRA-wrapped Linear, else None."""
    if is_lora_layer(m):
        m = m.base_layer
    if isinstance(m, nn.Linear):
        return int(m.in_features), int(m.out_features)
    return None


def _is_norm(m: nn.Module, d: int) -> bool:
    if isinstance(m, nn.LayerNorm):
        return True
    w = getattr(m, "weight", None)
    name = type(m).__name__.lower()
    own = list(m.named_parameters(recurse=False))
    return ("norm" in name and w is not None and tuple(w.shape) == (d,) and len(own) <= 2
            and not list(m.children()))


def _cfg(model: nn.Module) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        try:
            cfg = cfg.get_text_config()
        except TypeError:
            pass
    return cfg


def _cfg_get(cfg: Any, *names: str) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return None


def inspect_structure(model: nn.Module) -> dict:
    """The module paths and shapes an adapter needs, read from the module tree only (meta models work).

    Raises ValueError naming what is missing (no layer list, no MLP of known shape, a mixture of experts,
    a Conv1D MLP, no linear head) and how to proceed (--adapter module:Class).
    """
    base = unwrap_model(model)
    cfg = _cfg(base)
    arch = getattr(cfg, "model_type", None) or type(base).__name__
    fix = ("write an adapter for it (docs/models.md, 'Bringing your own model') and pass --adapter module:Class "
           "(API: register_adapter)")
    n_layers_cfg = _cfg_get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    lists = [(name, m) for name, m in base.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1
             and not any(k in name for k in ("lora_", "experts"))]
    if n_layers_cfg is not None:
        match = [x for x in lists if len(x[1]) == int(n_layers_cfg)]
        lists = match or lists
    if not lists:
        raise ValueError(f"architecture {arch!r}: no list of identical layers found in the model; {fix}")
    layers_prefix, layers = max(lists, key=lambda x: (len(x[1]), -x[0].count(".")))
    layer0 = layers[0]
    d = _cfg_get(cfg, "hidden_size", "n_embd", "d_model")
    d_ff = _cfg_get(cfg, "intermediate_size", "ffn_dim", "n_inner")
    names = {n: m for n, m in layer0.named_modules() if n and not n.endswith("base_layer")
             and not any(k in n.split(".") for k in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"))}
    if any("expert" in n for n in names) or _cfg_get(cfg, "num_local_experts", "num_experts", "n_routed_experts"):
        raise ValueError(f"architecture {arch!r} has a mixture-of-experts MLP: players are per expert and the "
                         f"router is not modelled; {fix}")
    if d is None:
        raise ValueError(f"architecture {arch!r}: the config gives no hidden size; {fix}")
    d = int(d)
    if d_ff is None:
        d_ff = 4 * d
    d_ff = int(d_ff)
    shapes = {n: s for n, m in names.items() if (s := _linear_shape(m)) is not None}
    downs = [n for n, (i, o) in shapes.items() if i == d_ff and o == d]
    if len(downs) != 1:
        conv = [n for n, m in names.items() if type(m).__name__ == "Conv1D"]
        if conv:
            raise ValueError(f"architecture {arch!r} writes its MLP with Conv1D modules ({', '.join(conv[:2])}), "
                             f"not nn.Linear; {fix}")
        raise ValueError(f"architecture {arch!r}: {len(downs)} linear module(s) of shape {d_ff} -> {d} (the MLP down "
                         f"projection) in a layer, expected 1; {fix}")
    down = downs[0]
    parent = down.rsplit(".", 1)[0] if "." in down else ""
    sib = {n: s for n, s in shapes.items() if (n.rsplit(".", 1)[0] if "." in n else "") == parent and n != down}
    ups = [n for n, (i, o) in sib.items() if i == d and o == d_ff]
    fused = [n for n, (i, o) in sib.items() if i == d and o == 2 * d_ff]
    if fused and not ups:
        roles = {"gate_up": fused[0], "down": down}
    elif len(ups) == 2:
        g = [n for n in ups if any(k in n.rsplit(".", 1)[-1] for k in ("gate", "w1", "wi_0"))]
        gate = g[0] if len(g) == 1 else sorted(ups)[0]
        roles = {"gate": gate, "up": [n for n in ups if n != gate][0], "down": down}
    elif len(ups) == 1:
        roles = {"up": ups[0], "down": down}
    else:
        raise ValueError(f"architecture {arch!r}: no input projection {d} -> {d_ff} next to the down projection "
                         f"{down} (the MLP's up/gate are elsewhere: a post-LN encoder?); {fix}")
    if not parent:
        raise ValueError(f"architecture {arch!r}: the MLP projections sit directly in the layer, not in an MLP "
                         f"module; {fix}")
    mlp_mod = layer0.get_submodule(parent)
    acts = [n for n, m in mlp_mod.named_children()
            if _linear_shape(m) is None and not isinstance(m, nn.Dropout) and not list(m.parameters())]
    norms = [n for n, m in layer0.named_children() if _is_norm(m, d)]
    post = [n for n in norms if "post" in n and any(k in n for k in ("feedforward", "ffn", "mlp", "ff_"))]
    # the final norm: the last norm-like module outside the layers (registration order follows the forward)
    outside = [(n, m) for n, m in base.named_modules() if n and not n.startswith(layers_prefix + ".")
               and n != layers_prefix and _is_norm(m, d)]
    final = outside[-1][0] if outside else None
    heads = [n for n in ("score", "classifier") if isinstance(getattr(base, n, None), nn.Module)]
    head_is_lm = False
    if not heads:
        # a causal LM: its own unembedding (tied or not) is the head of the next-token target
        emb = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        name = next((n for n, m in base.named_modules() if emb is not None and m is emb), None)
        if name and _linear_shape(emb) is not None:
            heads, head_is_lm = [name], True
    if not heads or _linear_shape(_resolve_head(base.get_submodule(heads[0]))) is None:
        raise ValueError(f"architecture {arch!r} has no linear classification head and no language-model head: "
                         f"load it as a causal LM (target next-token) or a sequence classifier, or {fix}")
    head = heads[0]
    if _linear_shape(_resolve_head(base.get_submodule(head)))[0] != d:
        raise ValueError(f"architecture {arch!r}: the head {head} does not read the {d}-wide residual; {fix}")
    if hasattr(base, "pooler") or any(n.endswith(".pooler") for n, _ in base.named_modules()):
        raise ValueError(f"architecture {arch!r} is an encoder with a pooler (CLS readout): register an adapter "
                         f"like BertAdapter; {fix}")
    return {"arch": arch, "layers_prefix": layers_prefix, "n_layers": len(layers), "d_model": d, "d_ff": d_ff,
            "mlp_roles": {r: n for r, n in roles.items()}, "mlp_rel": parent, "act_candidates": acts,
            "layer_norms": norms, "post_mlp_norm": post[0] if len(post) == 1 else None, "final_norm": final,
            "head": head, "head_is_lm": head_is_lm,
            "hidden_act": _cfg_get(cfg, "hidden_activation", "hidden_act", "activation_function")}


class _Stop(Exception):
    pass


class AutoDecoderAdapter(ModelAdapter):
    """A decoder adapter built from `inspect_structure` and confirmed by probes of the real modules.

    Players: the down projection's input. Readout: the final norm and the `score` head at the last non-pad
    token, or (a causal LM) the unembedding at every sample position (next-token target). A post-MLP norm
    (found by the write probe) makes the tail a `PostNormTail` (H = the MLP output, R = the rest of the
    layer output); otherwise H = the layer output and the tail is a `NormTail`.
    """

    pooling = "last"

    def __init__(self, model: nn.Module, structure: dict | None = None, probe: bool = True):
        super().__init__(model)
        s = structure or inspect_structure(self.model)
        self.structure = s
        self.name = s["arch"]
        self.layers_prefix = s["layers_prefix"]
        self.mlp_roles = dict(s["mlp_roles"])
        self.mlp_input_rel = s["mlp_rel"]
        self.norm_path = s["final_norm"]
        self.head_path = s["head"]
        self.post_mlp_norm = s["post_mlp_norm"]
        self.head_is_lm = bool(s.get("head_is_lm", False))
        self._act: Any = None
        self._gate_first = True  # fused gate_up: which half is the gate
        self._swap = False  # separate gate/up: act applies to "gate" (False) or to "up" (True)
        self.probe_report: dict = {}
        if probe and next(self.model.parameters()).device.type != "meta":
            self._probe()

    # ---- the MLP formula ---------------------------------------------------------------------------
    def _act_candidates(self, layer: int) -> list[tuple[str, Any]]:
        out = []
        for rel in self.structure["act_candidates"]:
            path = f"{self.mlp_input_rel}.{rel}"
            out.append((path, self.module(f"{self.layer_path(layer)}.{path}")))
        name = self.structure.get("hidden_act")
        if isinstance(name, str):
            try:
                from transformers.activations import ACT2FN

                out.append((f"ACT2FN[{name!r}]", ACT2FN[name]))
            except (ImportError, KeyError):
                pass
        return out

    def activation_fn(self, layer: int):
        if self._act is None:
            cands = self._act_candidates(layer)
            if not cands:
                raise ValueError(f"{self.name}: no activation module in the MLP and no hidden_act in the config; "
                                 "write an adapter (--adapter module:Class)")
            self._act = cands[0]
        rel = self._act[0]
        if rel.startswith("ACT2FN"):
            return self._act[1]
        return self.module(f"{self.layer_path(layer)}.{rel}")

    def mlp_activation(self, layer: int, x: torch.Tensor, *, base: bool = False) -> torch.Tensor:
        mods = self.mlp_modules(layer)
        proj = (lambda m, v: base_output(m, v)) if base else (lambda m, v: m(v))
        act = self.activation_fn(layer)
        if "gate_up" in mods:
            a, b = proj(mods["gate_up"], x).chunk(2, dim=-1)
            gate, up = (a, b) if self._gate_first else (b, a)
            return act(gate) * up
        if "gate" in mods:
            gate, up = proj(mods["gate"], x), proj(mods["up"], x)
            if self._swap:
                gate, up = up, gate
            return act(gate) * up
        return act(proj(mods["up"], x))

    def d_ff(self, layer: int = 0) -> int:
        return int(self.structure["d_ff"])

    @property
    def d_model(self) -> int:
        return int(self.structure["d_model"])

    # ---- H, tail -------------------------------------------------------------------------------------
    def residual_spec(self, layer: int, site: str = "mlp") -> tuple[str, str]:
        if self.post_mlp_norm:
            return self.mlp_module_names(layer)["down"], "output"  # H = the MLP output m
        return self.layer_path(layer), "output"

    def extra_reads(self, layer: int, site: str = "mlp") -> dict[str, tuple[str, str]]:
        return {"layer_out": (self.layer_path(layer), "output")} if self.post_mlp_norm else {}

    @property
    def tail_is_norm(self) -> bool:
        return not self.post_mlp_norm

    def make_tail(self, layer: int, site: str, out: dict, rows: np.ndarray | None = None) -> Any:
        if not self.post_mlp_norm:
            return self.tail(layer, site, rows=rows)
        from ..valuations.postnorm import PostNormTail
        from ..valuations.tail import NormTail, norm_params

        kind, g, b, eps = norm_params(self.module(f"{self.layer_path(layer)}.{self.post_mlp_norm}"))
        M = np.asarray(out["H"], dtype=np.float64)
        X = M - M.mean(1, keepdims=True) if kind == "layer" else M
        q = X / np.sqrt(np.mean(X * X, 1, keepdims=True) + eps) * g + (0.0 if b is None else b)
        R = np.asarray(out["layer_out"], dtype=np.float64) - q
        head = self.head()
        final = NormTail.from_modules(self.final_norm(), head, row=0 if head.weight.shape[0] == 1 and rows is None
                                      else None, rows=rows, softcap=self.softcap)
        tg = out.get("targets") if final.n_classes is not None else None
        return PostNormTail(kind, g, eps, R, final, post_bias=b, class_targets=tg)

    # ---- probes of the real modules ---------------------------------------------------------------
    def _probe(self) -> None:
        t0 = time.perf_counter()
        layer = 0
        lay = self.module(self.layer_path(layer))
        mlp = self.module(self.mlp_input_path(layer))
        p = next(self.model.parameters())
        store: dict[str, Any] = {}

        def pre(m, a, k):
            store["x"] = a[0].detach() if a else next(v for v in k.values() if isinstance(v, torch.Tensor)).detach()
            raise _Stop

        def lay_pre(m, a, k):
            store["args"], store["kwargs"] = a, k

        vocab = int(getattr(_cfg(self.model), "vocab_size", 8) or 8)
        ids = (torch.arange(1, 7) % max(vocab - 1, 1) + 1)[None].to(p.device)
        h1 = mlp.register_forward_pre_hook(pre, with_kwargs=True)
        h2 = lay.register_forward_pre_hook(lay_pre, with_kwargs=True)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        except _Stop:
            pass
        finally:
            h1.remove()
            h2.remove()
        # 1. the MLP formula: find the variant that reproduces the MLP module's own output
        x = store["x"]
        down = self.mlp_modules(layer)["down"]
        with torch.no_grad():
            ref = mlp(x)
            ref = ref[0] if isinstance(ref, tuple) else ref
            scale = float(ref.abs().max()) or 1.0
            variants = []
            for act in self._act_candidates(layer):
                if "gate_up" in self.mlp_roles:
                    variants += [(act, True, False), (act, False, False)]
                elif "gate" in self.mlp_roles:
                    variants += [(act, True, False), (act, True, True)]
                else:
                    variants += [(act, True, False)]
            found = None
            for act, gf, sw in variants:
                self._act, self._gate_first, self._swap = act, gf, sw
                try:
                    err = float((down(self.mlp_activation(layer, x)) - ref).abs().max()) / scale
                except (RuntimeError, TypeError):
                    continue
                if err <= 1e-4:
                    found = (act[0], gf, sw, err)
                    break
        if found is None:
            raise ValueError(f"architecture {self.name!r}: the MLP module's output is not down(act(gate x) * up x) nor "
                             "down(act(up x)) for any activation found; write an adapter (--adapter module:Class)")
        # 2. the MLP output's path into the layer output: an add, or a norm of the layer first
        args, kwargs = store["args"], store["kwargs"]
        gen = torch.Generator().manual_seed(0)
        rec: dict[str, torch.Tensor] = {}

        def down_hook(m, a, out, bump=None):
            rec["m"] = out
            return out if bump is None else out + bump

        def run(bump=None):
            hd = down.register_forward_hook(lambda m, a, o: down_hook(m, a, o, bump))
            try:
                with torch.no_grad():
                    o = lay(*args, **kwargs)
            finally:
                hd.remove()
            return o[0] if isinstance(o, tuple) else o

        out0 = run()
        m0 = rec["m"]
        bump = torch.randn(m0.shape, generator=gen, dtype=torch.float32).to(m0) * (0.1 * float(m0.abs().mean()) + 1e-3)
        diff = run(bump) - out0
        tol = 1e-3 * float(diff.abs().max()) + 1e-5 * float(out0.abs().max())
        post = None
        if float((diff - bump).abs().max()) <= tol:
            post = None
        else:
            cands = ([self.post_mlp_norm] if self.post_mlp_norm else []) + [
                n for n in self.structure["layer_norms"] if n != self.post_mlp_norm]
            for n in cands:
                nm = self.module(f"{self.layer_path(layer)}.{n}")
                with torch.no_grad():
                    pred = nm(m0 + bump) - nm(m0)
                if float((diff - pred).abs().max()) <= tol:
                    post = n
                    break
            else:
                raise ValueError(f"architecture {self.name!r}: the MLP output reaches the layer output neither by an "
                                 "add nor through one of the layer's norms (a post-LN block?); write an adapter "
                                 "(--adapter module:Class)")
        self.post_mlp_norm = post
        self.probe_report = {"mlp": {"activation": found[0], "gate_first": found[1], "swapped": found[2],
                                     "max_rel_err": found[3]},
                             "mlp_write": f"normalised by {post} then added" if post else "added to the residual",
                             "seconds": round(time.perf_counter() - t0, 3)}
        self.model.train(was)
        log.debug("detected %s: %s", self.name, self.probe_report)


def detect_adapter(model: nn.Module) -> AutoDecoderAdapter:
    """The `AutoDecoderAdapter` of `model`, probed once and kept on the model (probes run a tiny forward)."""
    base = unwrap_model(model)
    cached = getattr(base, "_hn_detected", None)
    if cached is not None:
        a = AutoDecoderAdapter(base, cached["structure"], probe=False)
        a._act, a._gate_first, a._swap = cached["act"], cached["gate_first"], cached["swap"]
        a.post_mlp_norm, a.probe_report = cached["post"], cached["report"]
        return a
    a = AutoDecoderAdapter(base)
    try:
        object.__setattr__(base, "_hn_detected", {"structure": a.structure, "act": a._act,
                                                  "gate_first": a._gate_first, "swap": a._swap,
                                                  "post": a.post_mlp_norm, "report": a.probe_report})
    except AttributeError:
        pass
    return a


def check_supported(path: str, *, trust_remote_code: bool = False, causal: bool = False) -> dict:
    """Decide from `path`'s config alone, before any weight is read, whether a model is supported.

    Registered adapters (by model_type) pass; otherwise the model is built on the meta device (no memory,
    no weights) and `inspect_structure` must find its parts. Returns the structure found (or
    {"registered": key}); raises ValueError naming the architecture and --adapter module:Class.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    key = getattr(cfg, "model_type", None)
    if key in _REGISTRY:
        return {"registered": key}
    auto, what = ((AutoModelForCausalLM, "causal-LM") if causal else
                  (AutoModelForSequenceClassification, "sequence-classification"))
    try:
        with torch.device("meta"):
            meta = auto.from_config(cfg)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"architecture {key!r} has no {what} class in transformers ({exc}); "
                         "write an adapter and pass --adapter module:Class") from exc
    if type(meta).__name__ in _REGISTRY:
        return {"registered": type(meta).__name__}
    return inspect_structure(meta)


def load_adapter_class(spec: str) -> type[ModelAdapter]:
    """The adapter class named by ``module:Class`` (an importable module) or ``path/to/file.py:Class``."""
    import importlib
    import importlib.util
    from pathlib import Path

    if ":" not in spec:
        raise ValueError(f"--adapter {spec!r}: give module:Class (e.g. my_adapters:GemmaLikeAdapter) or file.py:Class")
    mod_name, cls_name = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise FileNotFoundError(f"--adapter: {path} does not exist")
            sp = importlib.util.spec_from_file_location(path.stem, path)
            mod = importlib.util.module_from_spec(sp)
            sp.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"--adapter {spec!r}: cannot import {mod_name} ({exc}); put it on PYTHONPATH or give "
                         "path/to/file.py:Class") from exc
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
        raise ValueError(f"--adapter {spec!r}: {cls_name} in {mod_name} is not a ModelAdapter subclass")
    return cls


def use_adapter(model: nn.Module, adapter_cls: type[ModelAdapter]) -> nn.Module:
    """Make `get_adapter(model)` return `adapter_cls(model)` for this model object (the CLI's --adapter)."""
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, ModelAdapter)):
        raise ValueError(f"{adapter_cls!r} is not a ModelAdapter subclass")
    object.__setattr__(unwrap_model(model), "_hn_adapter", adapter_cls)
    return model
