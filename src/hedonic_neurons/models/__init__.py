"""Models: architectures found from the model (detect), adapters (BERT, the MNIST gated MLP, registered ones),
LoRA base-vs-adapted activations, hook-based extraction with early stop, per-layer caches, loaders,
targets of the local logit (next-token, label, predicted, head), `compute_valuations` and its
self-verification against the model's own modules (verify)."""

# Lazy (PEP 562): `import hedonic_neurons.models.cli` (the `valuations` command) must not pay for torch,
# transformers and PEFT before it can refuse an unsupported model; names load on first access.
from hedonic_neurons.lazy import lazy_getattr

_LAZY = {
    "AutoDecoderAdapter": "hedonic_neurons.models.detect",
    "BertAdapter": "hedonic_neurons.models.adapters",
    "DecoderAdapter": "hedonic_neurons.models.adapters",
    "GPTNeoXAdapter": "hedonic_neurons.models.adapters",
    "GatedMLPAdapter": "hedonic_neurons.models.adapters",
    "LayerCache": "hedonic_neurons.models.extract",
    "ModelAdapter": "hedonic_neurons.models.adapters",
    "ModuleTail": "hedonic_neurons.models.adapters",
    "Valuations": "hedonic_neurons.models.valuate",
    "VerificationError": "hedonic_neurons.models.verify",
    "ablate_channels": "hedonic_neurons.models.ablate",
    "activation_stats": "hedonic_neurons.models.extract",
    "check_supported": "hedonic_neurons.models.detect",
    "compute_valuations": "hedonic_neurons.models.valuate",
    "extract_activations": "hedonic_neurons.models.extract",
    "get_adapter": "hedonic_neurons.models.adapters",
    "layer_cache": "hedonic_neurons.models.extract",
    "layer_caches": "hedonic_neurons.models.extract",
    "describe_target": "hedonic_neurons.models.targets",
    "samples_for_target": "hedonic_neurons.models.targets",
    "target_batches": "hedonic_neurons.models.targets",
    "load_minilm": "hedonic_neurons.models.loading",
    "load_model": "hedonic_neurons.models.loading",
    "load_smollm2": "hedonic_neurons.models.loading",
    "lora_config": "hedonic_neurons.models.lora",
    "register_adapter": "hedonic_neurons.models.adapters",
    "registered_adapters": "hedonic_neurons.models.adapters",
    "smollm2_gguf": "hedonic_neurons.models.loading",
    "text_batches": "hedonic_neurons.models.extract",
    "unwrap_model": "hedonic_neurons.models.lora",
    "use_adapter": "hedonic_neurons.models.detect",
    "valuations_from_cache": "hedonic_neurons.models.valuate",
    "verify_valuations": "hedonic_neurons.models.verify",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = sorted(_LAZY)
