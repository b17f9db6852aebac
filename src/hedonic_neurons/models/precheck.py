"""Refuse an unsupported architecture in a second, before torch or transformers is imported.

`models.detect.check_supported` builds the model on the meta device and is the authority, but importing
torch and transformers' modeling code alone takes 10-15 s on a small machine. This first line reads only
files: the model's ``config.json``, transformers' own table of sequence-classification classes
(``models/auto/modeling_auto.py``) and the model's modeling source, both parsed with ``ast`` and never
executed. It refuses only on positive evidence, with the same one-line messages as `inspect_structure`:

- a ``model_type`` that transformers has no sequence-classification class for;
- a mixture-of-experts config (``num_local_experts`` / ``num_experts`` / ``n_routed_experts`` > 1);
- an MLP class whose projections are ``Conv1D`` (GPT-2 style: transposed weights, not ``nn.Linear``).

Anything it cannot read (remote code, a hub id, an unknown layout) is left to the meta-device check.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

__all__ = ["precheck_config", "config_dir", "check_layers_config", "loads_as_causal_lm", "ENCODER_TYPES"]

# encoders: no causal next token to predict (their LM heads, if any, are masked-LM heads)
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
                           "albert", "mpnet", "camembert", "modernbert", "nomic_bert", "xlm", "ernie"})

_FIX = ("write an adapter for it (docs/models.md, 'Bringing your own model') and pass --adapter module:Class "
        "(API: register_adapter)")


def config_dir(model: str) -> Path | None:
    """The local directory whose config.json describes `model` (a model dir, or a PEFT adapter's local base)."""
    p = Path(str(model)).expanduser()
    if not p.is_dir():
        return None
    if (p / "adapter_config.json").is_file():
        try:
            base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            return None
        return config_dir(base) if base else None
    return p if (p / "config.json").is_file() else None


def _transformers_dir() -> Path | None:
    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    locs = list(spec.submodule_search_locations or []) if spec else []
    return Path(locs[0]) if locs else None


@lru_cache(maxsize=1)
def _seq_cls_names() -> dict[str, str] | None:
    """model_type -> sequence-classification class, read from transformers' auto table (None if unreadable)."""
    root = _transformers_dir()
    src = root / "models" / "auto" / "modeling_auto.py" if root else None
    if src is None or not src.is_file():
        return None
    for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
                for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value.args[0]))
            except (AttributeError, IndexError, ValueError, TypeError):
                return None
    return None


def _conv1d_mlp(model_type: str) -> list[str]:
    """`self.<name> = Conv1D(...)` assignments in the MLP classes of the model's modeling source."""
    root = _transformers_dir()
    mod = model_type.replace("-", "_")
    src = root / "models" / mod / f"modeling_{mod}.py" if root else None
    if src is None or not src.is_file():
        return []
    found = []
    for cls in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
        if not (isinstance(cls, ast.ClassDef) and "mlp" in cls.name.lower()):
            continue
        for node in ast.walk(cls):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "Conv1D"):
                for t in node.targets:
                    if isinstance(t, ast.Attribute):
                        found.append(t.attr)
    return found


def check_layers_config(model: str, layers: list[int] | tuple[int, ...]) -> None:
    """Refuse a layer outside the model from its config.json alone, before torch or any weight loads
    (silent when no local config can be read: the adapter's own check follows after loading)."""
    bad = [la for la in layers if int(la) < 0]
    folder = config_dir(model)
    n = None
    if folder is not None:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        if isinstance(cfg, dict):
            text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
            n = next((text[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(text.get(k), int)),
                     None)
    if n is not None:
        bad += [la for la in layers if int(la) >= n]
    if bad:
        rng = f"use 0..{n - 1} (the model has {n} layers)" if n is not None else "layers count from 0"
        raise ValueError(f"layer {bad[0]} is out of range for {model}: {rng}")


def loads_as_causal_lm(model: str, target: str | None = None) -> bool:
    """Whether `model` will load as a causal LM (the next-token target), from its config.json alone: an explicit
    `target`, else a config that names no sequence classifier and is no encoder (unknown: False)."""
    if target is not None:
        return target == "next-token"
    folder = config_dir(model)
    if folder is None:
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(cfg, dict):
        return False
    archs = [str(a) for a in (cfg.get("architectures") or [])]
    return (not any(a.endswith(("ForSequenceClassification", "ForMaskedLM", "ForPreTraining")) for a in archs)
            and cfg.get("model_type") not in ENCODER_TYPES)


def precheck_config(model: str, causal: bool = False) -> None:
    """Raise ValueError for an architecture that is certainly unsupported, reading files only (no torch).

    Returns silently when `model` is supported or when the files cannot decide; `check_supported` follows.
    ``causal``: the model is loaded as a causal LM (next-token target), so no sequence-classification class
    is needed.
    """
    folder = config_dir(model)
    if folder is None:
        return
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'config.json'} is not valid JSON ({exc}): re-download the model") from exc
    if not isinstance(cfg, dict) or cfg.get("auto_map"):
        return  # remote code: only its own modules can tell
    key = cfg.get("model_type")
    if not isinstance(key, str):
        return
    text = cfg.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("model_type"), str):
        return  # a multimodal wrapper: the meta build reads its text model
    experts = [cfg.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts")]
    if any(isinstance(e, int) and e > 1 for e in experts):
        raise ValueError(f"architecture {key!r} has a mixture-of-experts MLP: players are per expert and the "
                         f"router is not modelled; {_FIX}")
    names = None if causal else _seq_cls_names()
    if names is not None and key not in names:
        raise ValueError(f"architecture {key!r} has no sequence-classification class in transformers; "
                         "write an adapter and pass --adapter module:Class")
    conv = _conv1d_mlp(key)
    if conv:
        raise ValueError(f"architecture {key!r} writes its MLP with Conv1D modules ({', '.join(conv[:2])}), "
                         f"not nn.Linear; {_FIX}")
