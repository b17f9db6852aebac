"""Models: architectures found from the model (detect), adapters (BERT, the MNIST gated MLP, registered ones),
LoRA base-vs-adapted activations, hook-based extraction with early stop, per-layer caches, loaders,
`compute_valuations` and its self-verification against the model's own modules (verify)."""

from hedonic_neurons.models.ablate import ablate_channels
from hedonic_neurons.models.adapters import (
    BertAdapter,
    DecoderAdapter,
    GatedMLPAdapter,
    GPTNeoXAdapter,
    ModelAdapter,
    ModuleTail,
    get_adapter,
    register_adapter,
    registered_adapters,
)
from hedonic_neurons.models.detect import AutoDecoderAdapter, check_supported, use_adapter
from hedonic_neurons.models.extract import (
    LayerCache,
    activation_stats,
    extract_activations,
    layer_cache,
    text_batches,
)
from hedonic_neurons.models.loading import load_minilm, load_model, load_smollm2, smollm2_gguf
from hedonic_neurons.models.lora import lora_config, unwrap_model
from hedonic_neurons.models.valuate import Valuations, compute_valuations, valuations_from_cache
from hedonic_neurons.models.verify import VerificationError, verify_valuations

__all__ = [
    "AutoDecoderAdapter",
    "VerificationError",
    "ablate_channels",
    "check_supported",
    "use_adapter",
    "verify_valuations",
    "BertAdapter",
    "DecoderAdapter",
    "GatedMLPAdapter",
    "GPTNeoXAdapter",
    "LayerCache",
    "ModelAdapter",
    "ModuleTail",
    "Valuations",
    "activation_stats",
    "compute_valuations",
    "extract_activations",
    "get_adapter",
    "layer_cache",
    "load_minilm",
    "load_model",
    "load_smollm2",
    "lora_config",
    "register_adapter",
    "registered_adapters",
    "smollm2_gguf",
    "text_batches",
    "unwrap_model",
    "valuations_from_cache",
]
