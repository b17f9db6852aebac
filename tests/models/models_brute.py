"""Brute-force references through the real modules (independent of the adapter code under test)."""

from __future__ import annotations

import torch

from hedonic_neurons.models.precision import keep_float64


def parts(model, arch: str, layer: int) -> dict:
    """The modules of one layer and the readout, addressed by hand for each architecture."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if arch in ("llama", "mistral"):
        lay = base.model.layers[layer]
        return dict(layer=lay, mlp_in=lay.mlp, gate=lay.mlp.gate_proj, up=lay.mlp.up_proj, down=lay.mlp.down_proj,
                    act=lay.mlp.act_fn, readout=lambda h: base.score(base.model.norm(h)), pool="last",
                    norm_owner=(base.model, "norm"))
    if arch.startswith("gpt_neox"):
        lay = base.gpt_neox.layers[layer]
        return dict(layer=lay, mlp_in=lay.mlp, gate=None, up=lay.mlp.dense_h_to_4h, down=lay.mlp.dense_4h_to_h,
                    act=lay.mlp.act, readout=lambda h: base.score(base.gpt_neox.final_layer_norm(h)), pool="last",
                    norm_owner=(base.gpt_neox, "final_layer_norm"))
    if arch == "bert":
        lay = base.bert.encoder.layer[layer]
        pooler = base.bert.pooler
        return dict(layer=lay, mlp_in=lay.intermediate, gate=None, up=lay.intermediate.dense,
                    down=lay.output.dense, act=lay.intermediate.intermediate_act_fn,
                    readout=lambda h: base.classifier(pooler.activation(pooler.dense(h))), pool="first")
    raise KeyError(arch)


def _base(m, x):
    return m.base_layer(x) if hasattr(m, "base_layer") else m(x)


def local_logits(model, arch: str, batches, layer: int, S=(), revert: str = "lora") -> torch.Tensor:
    """head(final_norm(h_layer)) per sample with channels S of the layer's MLP ablated.

    revert="lora": channel i's activation is replaced by its base (pre-LoRA) activation and its column
    of the down projection's LoRA delta is removed; revert="zero": the activation is set to 0.
    """
    p = parts(model, arch, layer)
    S = torch.as_tensor(list(S), dtype=torch.long)
    store = {}

    def mlp_pre(m, args):
        x = args[0]
        if p["gate"] is not None:
            store["g_base"] = p["act"](_base(p["gate"], x)) * _base(p["up"], x)
        else:
            store["g_base"] = p["act"](_base(p["up"], x))

    def down_fwd(m, args, out):
        if len(S) == 0:
            return out
        g = args[0]
        g_rev = g.clone()
        g_keep = g.clone()
        g_keep[..., S] = 0.0
        if revert == "zero":
            g_rev[..., S] = 0.0
        else:
            g_rev[..., S] = store["g_base"][..., S]
        if not hasattr(m, "base_layer"):  # plain Linear (no recursion into this hook)
            return torch.nn.functional.linear(g_rev, m.weight, m.bias)
        new = m.base_layer(g_rev)
        for a in m.active_adapters:
            new = new + m.lora_B[a](m.lora_A[a](g_keep)) * m.scaling[a]
        return new

    def layer_fwd(m, args, out):
        store["h"] = out[0] if isinstance(out, tuple) else out

    handles = [p["mlp_in"].register_forward_pre_hook(mlp_pre), p["down"].register_forward_hook(down_fwd),
               p["layer"].register_forward_hook(layer_fwd)]
    outs = []
    try:
        # float64 throughout: HF's norms and rotary tables would upcast to float32 only (DESIGN trap 9)
        with torch.no_grad(), keep_float64():
            for b in batches:
                model(**b)
                h = store["h"]
                if p["pool"] == "last":
                    idx = b["attention_mask"].sum(1) - 1
                else:
                    idx = torch.zeros(h.shape[0], dtype=torch.long)
                outs.append(p["readout"](h[torch.arange(h.shape[0]), idx])[:, 0])
    finally:
        for h in handles:
            h.remove()
    return torch.cat(outs)


def model_logits(model, batches) -> torch.Tensor:
    with torch.no_grad(), keep_float64():
        return torch.cat([model(**b).logits[:, 0] for b in batches])
