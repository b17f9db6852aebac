"""Adapter registry: where a model's layers, MLP modules, final norm, head and readout position live.

One adapter per architecture, keyed by ``config.model_type`` (transformers) or by class name, and
addressing modules by dotted path so hooks go on exactly the modules needed. A PEFT-wrapped model is
unwrapped (``get_base_model()``); its LoRA layers sit at the same paths.

Add an architecture with ``register_adapter``::

    from hedonic_neurons.models import DecoderAdapter, register_adapter

    class Qwen2Adapter(DecoderAdapter):       # same module names as LLaMA
        pass

    register_adapter("qwen2", Qwen2Adapter)   # key: config.model_type or the model's class name
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .lora import base_output, has_lora, merged_weight, unwrap_model

__all__ = [
    "ModelAdapter",
    "DecoderAdapter",
    "MistralAdapter",
    "GPTNeoXAdapter",
    "BertAdapter",
    "GatedMLPAdapter",
    "ModuleTail",
    "register_adapter",
    "get_adapter",
    "registered_adapters",
    "SITES",
]

SITES = ("mlp", "residual")
_REGISTRY: dict[str, type[ModelAdapter]] = {}


def register_adapter(key: str, adapter_cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Register `adapter_cls` for models whose ``config.model_type`` or class name equals `key`."""
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, ModelAdapter)):
        raise ValueError(f"register_adapter: {adapter_cls!r} is not a ModelAdapter subclass; subclass one")
    _REGISTRY[key] = adapter_cls
    return adapter_cls


def registered_adapters() -> dict[str, str]:
    """{key: adapter class name} of every registered architecture."""
    return {k: v.__name__ for k, v in sorted(_REGISTRY.items())}


def _arch_key(model: nn.Module) -> tuple[str | None, str]:
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None) if cfg is not None and not isinstance(cfg, dict) else None
    return model_type, type(model).__name__


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for `model` (PEFT wrappers unwrapped); ValueError naming the architecture if unknown."""
    if isinstance(model, ModelAdapter):
        return model
    base = unwrap_model(model)
    override = getattr(base, "_hn_adapter", None)  # models.detect.use_adapter (the CLI's --adapter)
    if override is not None:
        return override(base)
    model_type, cls_name = _arch_key(base)
    for key in (model_type, cls_name):
        if key is not None and key in _REGISTRY:
            return _REGISTRY[key](base)
    from .detect import detect_adapter

    try:
        return detect_adapter(base)  # found from the module tree and probes of the real modules
    except ValueError as exc:
        raise ValueError(
            f"no model adapter for architecture {model_type or cls_name!r} ({cls_name}): {exc}. Known by name: "
            f"{', '.join(sorted(_REGISTRY))}; register one with hedonic_neurons.models.register_adapter("
            f"{(model_type or cls_name)!r}, MyAdapter) or pass --adapter module:Class (docs/models.md)"
        ) from None


class ModuleTail:
    """A generic local-logit tail built from torch modules: callable H (N, d) -> logits (N,) or (N, K).

    Duck-types `NormTail.logit` / `logit_torch` for tails that are not "norm + linear head" (BERT:
    the layer's post-LN, the pooler and the classifier). `kind = "module"`.
    """

    kind = "module"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], d: int, n_classes: int | None = None,
                 description: str = ""):
        self.fn = fn
        self._d = int(d)
        self._n_classes = n_classes
        self.description = description

    @property
    def d(self) -> int:
        return self._d

    @property
    def n_classes(self) -> int | None:
        return self._n_classes

    def logit_torch(self, H: torch.Tensor, targets: Any = None) -> torch.Tensor:
        """Differentiable local logit of each row of H."""
        out = self.fn(H)
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        if out.ndim == 1:
            return out
        if targets is None:
            raise ValueError(f"this tail has {out.shape[1]} classes: pass targets (one class per sample)")
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=out.device)
        return out.gather(1, t[:, None])[:, 0]

    @torch.no_grad()
    def logit(self, H: Any, targets: Any = None) -> np.ndarray:
        """Local logit of each row of H (numpy or torch) as a numpy array, in H's precision."""
        Ht = torch.as_tensor(np.asarray(H)) if not isinstance(H, torch.Tensor) else H
        if Ht.ndim == 1:
            Ht = Ht[None]
        if Ht.ndim != 2 or Ht.shape[1] != self.d:
            raise ValueError(f"H has shape {tuple(Ht.shape)}: expected (N, {self.d}) residual states")
        if not Ht.is_floating_point() or Ht.dtype in (torch.float16, torch.bfloat16):
            Ht = Ht.float()
        return self.logit_torch(Ht, targets).detach().cpu().numpy()

    def __repr__(self) -> str:
        return f"ModuleTail({self.description or self.fn!r}, d={self.d})"


class SoftCap(nn.Module):
    """cap * tanh(z / cap): the final logit soft-capping Gemma-2's causal LM applies inline in its forward."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = float(cap)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(z / self.cap)


def _module_fn_in_dtype(modules: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compose modules, running them in the input's dtype/device (a float64 cache is not downcast)."""

    def fn(h: torch.Tensor) -> torch.Tensor:
        for m in modules:
            params = {k: v.detach().to(device=h.device, dtype=h.dtype) for k, v in m.named_parameters()}
            # detached parameters: gradients (the autograd Hessian) flow to H only, never to the weights
            h = torch.func.functional_call(m, params, (h,)) if params else m(h)
        return h

    return fn


def _resolve_head(module: nn.Module) -> nn.Module:
    """The active module behind a PEFT `ModulesToSaveWrapper` (a trained head), else `module`."""
    if hasattr(module, "modules_to_save") and hasattr(module, "original_module"):
        if getattr(module, "disable_adapters", False):
            return module.original_module
        active = getattr(module, "active_adapter", None)
        if isinstance(active, (list, tuple)):
            active = active[0] if active else None
        if active is not None and active in module.modules_to_save:
            return module.modules_to_save[active]
        return module.original_module
    return module


class ModelAdapter:
    """What the valuation code needs to know about one architecture; subclass and register new ones.

    Layers are 0-based indices into the model's layer list unless a subclass says otherwise.
    Sites: ``mlp`` (players = the d_ff inputs of the down projection) and, where supported,
    ``residual`` (players = the d_model coordinates of the residual stream after a layer).
    """

    name = "base"
    sites: tuple[str, ...] = ("mlp",)
    layers_prefix = ""  # dotted path of the ModuleList of layers
    mlp_roles: dict[str, str] = {}  # role (gate/up/down) -> path relative to a layer
    mlp_input_rel = ""  # module (relative to a layer) whose first input is the MLP input
    act_rel = ""  # activation module relative to a layer ("" = use `act_fn`)
    norm_path: str | None = None
    head_path: str | None = None
    # Pretrained modules between the last layer and the head that a new task head is trained with
    # (BERT's pooler: its NSP-trained dense + tanh, the rest of BertForSequenceClassification's head).
    head_extra_paths: tuple[str, ...] = ()
    pooling = "last"  # "last" non-pad token, "first" token (CLS), "none" (vector inputs)
    head_is_lm = False  # the head is the model's unembedding (a causal LM: next-token target)

    def __init__(self, model: nn.Module):
        self.model = unwrap_model(model)

    # ---- structure --------------------------------------------------------------------------------
    def module(self, path: str) -> nn.Module:
        """The sub-module at dotted `path` ('' = the model)."""
        return self.model.get_submodule(path) if path else self.model

    @property
    def n_layers(self) -> int:
        return len(self.module(self.layers_prefix))

    def layer_path(self, layer: int) -> str:
        return f"{self.layers_prefix}.{layer}"

    def layer_range(self, site: str = "mlp") -> range:
        """Valid layer indices for `site`."""
        return range(self.n_layers)

    def check_layer(self, layer: int, site: str = "mlp") -> int:
        """Validate (site, layer); ValueError naming the valid range."""
        if site not in self.sites:
            raise ValueError(f"site {site!r} is not supported for {self.name} models: use one of {self.sites}")
        rng = self.layer_range(site)
        if not isinstance(layer, (int, np.integer)) or int(layer) not in rng:
            raise ValueError(
                f"layer {layer!r} is out of range for this {self.name} model (site {site!r}): "
                f"use {rng.start}..{rng.stop - 1}"
            )
        return int(layer)

    def mlp_module_names(self, layer: int) -> dict[str, str]:
        """{role: full dotted path} of the MLP projections of `layer` (gate, up, down)."""
        return {role: f"{self.layer_path(layer)}.{rel}" for role, rel in self.mlp_roles.items()}

    def mlp_modules(self, layer: int) -> dict[str, nn.Module]:
        return {role: self.module(p) for role, p in self.mlp_module_names(layer).items()}

    def mlp_input_path(self, layer: int) -> str:
        return f"{self.layer_path(layer)}.{self.mlp_input_rel}" if self.mlp_input_rel else self.layer_path(layer)

    def d_ff(self, layer: int = 0) -> int:
        return int(merged_weight(self.mlp_modules(layer)["down"]).shape[1])

    @property
    def d_model(self) -> int:
        return int(merged_weight(self.mlp_modules(0)["down"]).shape[0])

    def n_players(self, layer: int, site: str = "mlp") -> int:
        return self.d_ff(layer) if site == "mlp" else self.d_model

    def activation_fn(self, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.module(f"{self.layer_path(layer)}.{self.act_rel}")

    def mlp_activation(self, layer: int, x: torch.Tensor, *, base: bool = False) -> torch.Tensor:
        """g = act(gate x) * up x (gated) or act(up x) (plain), adapted or base (pre-LoRA) weights."""
        mods = self.mlp_modules(layer)
        proj = (lambda m, v: base_output(m, v)) if base else (lambda m, v: m(v))
        act = self.activation_fn(layer)
        if "gate" in mods:
            return act(proj(mods["gate"], x)) * proj(mods["up"], x)
        return act(proj(mods["up"], x))

    def has_lora(self, layer: int) -> bool:
        """True when any MLP projection of `layer` carries an active LoRA adapter."""
        return any(has_lora(m) for m in self.mlp_modules(layer).values())

    def down_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(merged W_down (d, n), Delta W_down (d, n) or None when down_proj has no LoRA)."""
        down = self.mlp_modules(layer)["down"]
        W = merged_weight(down)
        if has_lora(down):
            from .lora import base_weight

            return W, W - base_weight(down)
        return W, None

    # ---- where H is read --------------------------------------------------------------------------
    def residual_spec(self, layer: int, site: str = "mlp") -> tuple[str, str]:
        """(module path, "output"|"input") whose tensor is the residual H after `layer`."""
        return self.layer_path(layer), "output"

    def extra_reads(self, layer: int, site: str = "mlp") -> dict[str, tuple[str, str]]:
        """More tensors to read at the readout position in the same pass: {name: (module path, "output"|"input")}."""
        return {}

    def make_tail(self, layer: int, site: str, out: dict, rows: np.ndarray | None = None) -> Any:
        """The tail of a cache, given the per-sample readouts `out` (H, acts, extra reads, targets); `rows`: the
        head rows to keep (a language-model head: the next tokens' unembedding rows only)."""
        return self.tail(layer, site) if rows is None else self.tail(layer, site, rows=rows)

    def residual_readers(self, layer: int) -> np.ndarray | None:
        """OCA's weight term at the residual site, where the paper gives none: the weights that read h_layer
        next, (rows, d), column i the direction residual coordinate i is read along; None: no weight term
        (1 - |cos| = 1)."""
        return None

    def final_norm(self) -> nn.Module | None:
        return self.module(self.norm_path) if self.norm_path else None

    def head(self) -> nn.Module:
        return _resolve_head(self.module(self.head_path))

    def readout_modules(self, layer: int, site: str = "mlp") -> list[nn.Module]:
        """The model's own modules that turn the layer's output (at the readout position) into the local logit.

        Self-verification (`models.verify`) runs these on the real layer's output, independently of `tail`:
        override it together with `tail` when the readout is not final_norm + head.
        """
        norm = self.final_norm()
        cap = [SoftCap(self.softcap)] if self.softcap else []
        return ([norm] if norm is not None else []) + [self.head()] + cap

    @property
    def softcap(self) -> float | None:
        """Gemma-2's final logit soft-capping (cap * tanh(z / cap)) of a language-model head, else None."""
        if not self.head_is_lm:
            return None
        cfg = getattr(self.model, "config", None)
        cap = getattr(cfg, "final_logit_softcapping", None) if cfg is not None and not isinstance(cfg, dict) else None
        return float(cap) if cap else None

    @property
    def tail_is_norm(self) -> bool:
        """True when the tail is a `NormTail` (final norm + linear head: the fast closed forms apply)."""
        return True

    def tail(self, layer: int, site: str = "mlp", rows: np.ndarray | None = None):
        """The local logit as a function of H: head(final_norm(h)) (a NormTail for norm + linear heads); `rows`
        keeps those head rows only (next-token targets index them)."""
        from ..valuations.tail import NormTail

        head = self.head()
        row = 0 if head.weight.shape[0] == 1 and rows is None else None
        return NormTail.from_modules(self.final_norm(), head, row=row, rows=rows, softcap=self.softcap)

    # ---- readout position -------------------------------------------------------------------------
    def pool_index(self, batch: dict[str, Any], seq_len: int) -> torch.Tensor | None:
        """Per-sample readout position (B,), None for inputs without a sequence axis."""
        if self.pooling == "none":
            return None
        ids = batch.get("input_ids")
        mask = batch.get("attention_mask")
        n = (ids if ids is not None else mask).shape[0] if (ids is not None or mask is not None) else None
        if self.pooling == "first":
            return torch.zeros(n if n is not None else 1, dtype=torch.long)
        pad = getattr(getattr(self.model, "config", None), "pad_token_id", None)
        if ids is not None and pad is not None:
            # The rule transformers' sequence classifiers use: the rightmost token that is not padding.
            non_pad = (ids != pad).to(torch.int64)
            return (torch.arange(ids.shape[-1]) * non_pad.cpu()).argmax(-1)
        if mask is not None:
            return (torch.arange(mask.shape[-1]) * mask.to(torch.int64).cpu()).argmax(-1)
        return torch.full((n if n is not None else 1,), seq_len - 1, dtype=torch.long)


class DecoderAdapter(ModelAdapter):
    """LLaMA / Mistral (and look-alikes): gated SiLU MLP, final RMSNorm `model.norm`, head `score`."""

    name = "llama"
    layers_prefix = "model.layers"
    mlp_roles = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    mlp_input_rel = "mlp"
    act_rel = "mlp.act_fn"
    norm_path = "model.norm"
    head_path = "score"
    pooling = "last"


class MistralAdapter(DecoderAdapter):
    """Mistral: the LLaMA layout (gated SiLU MLP, `model.norm` RMSNorm, `score`)."""

    name = "mistral"


class GPTNeoXAdapter(ModelAdapter):
    """GPT-NeoX / Pythia: plain GELU MLP, final LayerNorm, head `score`, last non-pad token.

    With ``use_parallel_residual`` the MLP reads the layer input, otherwise the post-attention
    residual; either way its output is added to the residual, so an ablation's change to the layer
    output is W_down delta_g in both cases (the MLP-input hook sees whichever input the model uses).
    """

    name = "gpt_neox"
    layers_prefix = "gpt_neox.layers"
    mlp_roles = {"up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"}
    mlp_input_rel = "mlp"
    act_rel = "mlp.act"
    norm_path = "gpt_neox.final_layer_norm"
    head_path = "score"
    pooling = "last"


class BertAdapter(ModelAdapter):
    """BERT / MiniLM (post-LN): intermediate.dense -> act -> output.dense, then output.LayerNorm.

    The MLP's write passes through the layer's own LayerNorm: h_l = LN_l(r), r = dense(g) + b + attn_out.
    So the cached H is the pre-LN sum r at CLS, the players' deltas act on r, and the local logit is
    classifier(pooler(LN_l(r))) (this project's reading of head(final_norm(h_l)) for a post-LN model:
    BERT has no final norm; its head is pooler + classifier at CLS). The tail is a `ModuleTail`
    re-running those modules, so exact ablation is exact and the Hessian comes from autograd.
    """

    name = "bert"
    layers_prefix = "bert.encoder.layer"
    mlp_roles = {"up": "intermediate.dense", "down": "output.dense"}
    mlp_input_rel = "intermediate"
    act_rel = "intermediate.intermediate_act_fn"
    norm_path = None
    head_path = "classifier"
    head_extra_paths = ("bert.pooler",)
    pooling = "first"

    def residual_spec(self, layer: int, site: str = "mlp") -> tuple[str, str]:
        return f"{self.layer_path(layer)}.output.LayerNorm", "input"

    @property
    def tail_is_norm(self) -> bool:
        return False

    def readout_modules(self, layer: int, site: str = "mlp") -> list[nn.Module]:
        pooler = getattr(self.model.bert, "pooler", None)
        if pooler is not None:
            pooler = _resolve_head(pooler)
        # the pooler's own dense + tanh (its forward would pick token 0 of a sequence; we pass CLS already)
        mods = [] if pooler is None else [pooler.dense, pooler.activation]
        return mods + [self.head()]

    def tail(self, layer: int, site: str = "mlp") -> ModuleTail:
        ln = self.module(f"{self.layer_path(layer)}.output.LayerNorm")
        pooler = getattr(self.model.bert, "pooler", None)
        if pooler is not None:
            pooler = _resolve_head(pooler)  # trained with the head (a PEFT modules_to_save copy)
        mods = [ln]
        desc = f"{self.layer_path(layer)}.output.LayerNorm"
        if pooler is not None:
            mods += [pooler.dense, pooler.activation]
            desc += " -> bert.pooler"
        mods.append(self.head())
        desc += " -> classifier"
        n_out = int(self.head().weight.shape[0])
        return ModuleTail(_module_fn_in_dtype(mods), d=int(ln.weight.shape[0]),
                          n_classes=None if n_out == 1 else n_out, description=desc)


class GatedMLPAdapter(ModelAdapter):
    """The MNIST `GatedMLPClassifier`: layers are numbered like its hidden states h1..h_L (1-based).

    ``residual`` site: players are the d_model coordinates of h_l, l in 1..L (C = identity).
    ``mlp`` site: players are the d_ff channels of the block that produces h_l, l in 2..L.
    Tail: LayerNorm `norm` + `head`, read at each sample's true class (targets).
    """

    name = "gated_mlp"
    sites = ("mlp", "residual")
    layers_prefix = "blocks"
    mlp_roles = {"gate": "gate", "up": "up", "down": "down"}
    norm_path = "norm"
    head_path = "head"
    pooling = "none"

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks) + 1

    def layer_range(self, site: str = "mlp") -> range:
        return range(1, self.n_layers + 1) if site == "residual" else range(2, self.n_layers + 1)

    def layer_path(self, layer: int) -> str:
        # The block that produces h_layer (h1 comes from the input projection).
        return "inp" if layer == 1 else f"blocks.{layer - 2}"

    def mlp_input_path(self, layer: int) -> str:
        return self.layer_path(layer)

    def activation_fn(self, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return F.silu

    def d_ff(self, layer: int = 2) -> int:
        return int(merged_weight(self.mlp_modules(max(layer, 2))["down"]).shape[1])

    @property
    def d_model(self) -> int:
        return int(self.model.norm.weight.shape[0])

    def mlp_modules(self, layer: int) -> dict[str, nn.Module]:
        return super().mlp_modules(max(layer, 2))

    def residual_readers(self, layer: int) -> np.ndarray:
        """h1..h4: the next block's gate and up projections stacked, (2 d_ff, d); the last layer: the head
        with the final LayerNorm gain folded in, (n_classes, d) (appendix I.4's OCA for the MNIST net)."""
        m = self.model
        if layer <= len(m.blocks):
            b = m.blocks[layer - 1]
            return np.vstack([b.gate.weight.detach().numpy(), b.up.weight.detach().numpy()]).astype(np.float64)
        return (m.head.weight.detach().double() * m.norm.weight.detach().double()).numpy()


# LLaMA, Mistral, GPT-NeoX, Qwen2/3, Phi-3, OLMo-2, Gemma-2 ... are found from the model (models.detect);
# DecoderAdapter / GPTNeoXAdapter stay as classes to subclass for models the detection does not cover.
register_adapter("bert", BertAdapter)
register_adapter("GatedMLPClassifier", GatedMLPAdapter)
