"""What the local logit reads: the target of a valuation, chosen explicitly and recorded with every result.

- ``next-token`` (a causal LM): the model's own logit of the token that actually comes next, through its real
  final norm and (tied or not) unembedding, with Gemma-2's final logit soft-capping where the config sets it.
  Every position with an observed next token is a sample (``positions="all"``), or only the one predicting a
  text's last token (``"last"``); ``max_samples`` draws that many (text, position) samples at random (seeded).
- ``label`` (a sequence classifier with its trained head): the gold label's logit at the pooling position.
- ``predicted`` (the same, no labels): the logit of the class the full model predicts for each input.
- ``head``: the head as it is (a scalar head, e.g. one fine-tuned by the reranker; a K-class head needs labels).

A newly initialised head measures a random projection: loaders refuse it unless asked (``allow_new_head``).
Sample batches are dicts of model inputs plus per-sample keys: ``sample_row`` (row in the batch), ``sample_pos``
(position read), ``sample_text`` (index of the text), ``index`` (sample id) and ``labels`` (the target id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .precheck import ENCODER_TYPES

__all__ = ["TARGETS", "POSITIONS", "MAX_SAMPLES", "ENCODER_TYPES", "default_target", "model_target",
           "check_target", "describe_target", "samples_for_target", "draw_samples", "text_lengths", "batch_lengths",
           "target_batches", "predicted_labels", "new_head_error", "format_target", "subset_sample_batches"]

TARGETS = ("next-token", "label", "predicted", "head")
POSITIONS = ("all", "last")
MAX_SAMPLES = 4096


def new_head_error(what: str) -> ValueError:
    """The one-line refusal of a head that would be newly initialised."""
    return ValueError(f"{what} has no trained classification head: the `score`/`classifier` head would be random; "
                      "use --target next-token (causal LM), or pass --allow-new-head (allow_new_head=True) to "
                      "measure a new random head knowingly")


def _check_name(target: str | None) -> None:
    if target is not None and target not in TARGETS:
        raise ValueError(f"target {target!r} is unknown: use one of {', '.join(TARGETS)}")


def _cfg_encoder(cfg: Any) -> bool:
    archs = list(getattr(cfg, "architectures", None) or [])
    return (getattr(cfg, "model_type", None) in ENCODER_TYPES
            or any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs))


def _cfg_classifier(cfg: Any) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (getattr(cfg, "architectures", None) or []))


def default_target(cfg: Any, labels_given: bool = False, target: str | None = None) -> str:
    """The target a checkpoint's config implies (or `target`, checked against it), before any weight loads.

    A config whose architectures name a sequence classifier: ``label`` with labels, ``predicted`` for a
    K-class head, ``head`` for a scalar one; an encoder without one: ``head`` (a new head: refused unless
    allowed); any other decoder (``*ForCausalLM``, a base model): ``next-token``.
    """
    _check_name(target)
    encoder = _cfg_encoder(cfg)
    arch = getattr(cfg, "model_type", None) or "this model"
    if target == "next-token" and encoder:
        raise ValueError(f"--target next-token needs a causal (decoder) language model; {arch!r} is an encoder "
                         "with no next token to predict: use --target label / predicted / head")
    if target is not None:
        return target
    if _cfg_classifier(cfg):
        if labels_given:
            return "label"
        return "predicted" if int(getattr(cfg, "num_labels", 1) or 1) > 1 else "head"
    return "head" if encoder else "next-token"


def _adapter(model: Any):
    from .adapters import get_adapter

    return get_adapter(model)


def model_target(model: Any, target: str | None = None, labels_given: bool = False) -> str:
    """The target of a loaded model object: its LM head gives ``next-token``, a classification head
    ``label`` (labels given), ``predicted`` (K > 1 classes) or ``head`` (a scalar head); `target` is checked."""
    _check_name(target)
    a = _adapter(model)
    lm = bool(getattr(a, "head_is_lm", False))
    cfg = getattr(a.model, "config", None)
    if target == "next-token" and not lm:
        if cfg is not None and not isinstance(cfg, dict) and _cfg_encoder(cfg):
            raise ValueError(f"--target next-token needs a causal (decoder) language model; "
                             f"{getattr(cfg, 'model_type', 'this model')!r} is an encoder with no next token to "
                             "predict: use --target label / predicted / head")
        raise ValueError("--target next-token needs the model's language-model head, and this model is a sequence "
                         "classifier: load it with load_model(..., target='next-token') (AutoModelForCausalLM)")
    if target in ("label", "predicted", "head") and lm:
        raise ValueError(f"--target {target} needs a classification head, and this is a causal LM with only its "
                         "language-model head: use --target next-token, or load it with target='head' and "
                         "allow_new_head=True to measure a new random head knowingly")
    if target is not None:
        return target
    if lm:
        return "next-token"
    if labels_given:
        return "label"
    return "predicted" if (_n_classes(a) or 1) > 1 else "head"


def _n_classes(adapter: Any) -> int | None:
    try:
        head = adapter.head()
    except (AttributeError, TypeError, ValueError):
        return None
    w = getattr(head, "weight", None)
    return None if w is None else int(w.shape[0])


def check_target(model: Any, target: str, labels: Sequence[int] | None, n_inputs: int | None = None) -> None:
    """One-line ValueError for labels that the target cannot use: missing, too few / many, out of range."""
    if target == "label":
        if labels is None:
            raise ValueError("--target label reads the gold label's logit: give one label per input (a .jsonl with "
                             "{'text', 'label'}, a .tsv/.csv with a label column, or labels=[...])")
        lab = np.asarray(labels)
        if n_inputs is not None and lab.shape[0] != n_inputs:
            raise ValueError(f"{lab.shape[0]} labels for {n_inputs} inputs: give one label per input")
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be class indices (integers), got {lab.dtype}: map names through the "
                             "model's label2id first")
        k = _n_classes(_adapter(model))
        if k is not None and lab.size and (lab.min() < 0 or lab.max() >= k):
            raise ValueError(f"label {int(lab.max() if lab.max() >= k else lab.min())} is out of range for this "
                             f"model's {k}-label head: labels must lie in 0..{k - 1}")
    elif labels is not None:
        raise ValueError(f"labels are read only by --target label, not by --target {target}: drop them or use "
                         "--target label")


def describe_target(model: Any, target: str, *, positions: str | None = None, n_samples: int | None = None,
                    max_samples: int | None = None, n_texts: int | None = None, seed: int | None = None,
                    head_is_new: bool | None = None) -> dict[str, Any]:
    """The record of what the local logit read, for valuations.json and any summary or report.

    {"kind", "positions", "n_samples", "n_texts" (the texts the samples come from), "max_samples", "seed",
    "readout", "head_is_new", "softcap"}.
    ``head_is_new`` None: unknown (a model object not made by `load_model`).
    """
    a = _adapter(model)
    norm = a.norm_path or "no final norm"
    head = a.head_path
    if head_is_new is None:
        head_is_new = getattr(a.model, "_hn_head_is_new", None)
    cap = getattr(a, "softcap", None)
    if target == "next-token":
        base = a.model
        tied = False
        try:
            tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
        except AttributeError:
            pass
        emb = ""
        if tied:
            emb_mod = base.get_input_embeddings()
            emb = next((n for n, m in base.named_modules() if m is emb_mod), "the input embeddings")
        readout = (f"logit of the observed next token through {norm} and {head}"
                   + (f" (tied to {emb})" if tied else "")
                   + (f", soft-capped cap * tanh(z / cap), cap = {cap:g}" if cap else ""))
    else:
        what = {"label": "the gold label's logit", "predicted": "the logit of the model's predicted class (argmax "
                "of its own logits)", "head": "the head's output"}[target]
        pool = {"last": "the last non-pad token", "first": "the first token (CLS)", "none": "the input"}.get(
            a.pooling, a.pooling)
        via = f"{norm} and {head}" if a.tail_is_norm else f"the layer's norm, the pooler and {head}"
        readout = f"{what} through {via} at {pool}"
        positions = None
        max_samples = None
    return {"kind": target, "positions": positions, "n_samples": n_samples, "n_texts": n_texts,
            "max_samples": max_samples, "seed": seed if target == "next-token" else None, "readout": readout,
            "head_is_new": head_is_new, "softcap": cap if target == "next-token" else None}


# ---------------------------------------------------------------------------------------------------
# batches of samples
# ---------------------------------------------------------------------------------------------------


def _text_ids(batches: list[dict]) -> list[np.ndarray]:
    """Each batch's text indices: its "index" rows (text_batches sorted by length) or a running count."""
    out, k = [], 0
    for b in batches:
        n = int(b["input_ids"].shape[0])
        idx = b.get("index")
        out.append(np.arange(k, k + n) if idx is None else np.asarray(torch.as_tensor(idx)).reshape(-1))
        k += n
    return out


def _check_dicts(batches: Any) -> list[dict]:
    batches = list(batches)
    if not batches:
        raise ValueError("no inputs: the batches are empty")
    if not all(isinstance(b, dict) and "input_ids" in b for b in batches):
        raise ValueError("next-token samples are read from token batches: give texts, or dicts with input_ids "
                         "(and attention_mask)")
    return batches


def draw_samples(lengths: Sequence[int], positions: str = "all", max_samples: int | None = MAX_SAMPLES,
                 seed: int = 0) -> list[tuple[int, int]]:
    """The next-token samples of texts with `lengths` tokens: (text, position) pairs, every position with an
    observed next token ("all") or the one predicting each text's last token ("last"), `max_samples` of them
    drawn uniformly with `seed` when there are more, sorted by text then position. The draw depends on the
    lengths only, so one process and the ranks of a torchrun launch draw the same samples."""
    if positions not in POSITIONS:
        raise ValueError(f"positions {positions!r} is unknown: use 'all' or 'last'")
    if max_samples is not None and int(max_samples) < 2:
        raise ValueError(f"max_samples = {max_samples}: valuations need at least 2 samples (or None for all)")
    lengths = [int(n) for n in lengths]
    for t, n in enumerate(lengths):
        if n < 2:
            raise ValueError(f"text {t} has {n} token(s): next-token needs at least 2 tokens per text (a position "
                             "and the token after it); drop or lengthen it")
    if positions == "all":
        text = np.repeat(np.arange(len(lengths)), [n - 1 for n in lengths])
        pos = np.concatenate([np.arange(n - 1) for n in lengths]) if lengths else np.zeros(0, np.int64)
    else:
        text, pos = np.arange(len(lengths)), np.asarray(lengths) - 2
    sel = np.arange(text.size)
    if max_samples is not None and text.size > int(max_samples):
        sel = np.sort(np.random.default_rng(seed).choice(text.size, size=int(max_samples), replace=False))
    return [(int(text[k]), int(pos[k])) for k in sel]


def text_lengths(tokenizer: Any, texts: Sequence[str], max_length: int = 256) -> list[int]:
    """Tokens per text as `text_batches` cuts them (truncated to `max_length`)."""
    return [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def batch_lengths(batches: Iterable[Any]) -> list[int]:
    """Tokens per input (attention mask sums) of ready token batches, in input order."""
    batches = _check_dicts(batches)
    out: dict[int, int] = {}
    for b, tid in zip(batches, _text_ids(batches), strict=True):
        ids = torch.as_tensor(b["input_ids"])
        mask = b.get("attention_mask")
        n = (torch.ones_like(ids) if mask is None else torch.as_tensor(mask)).sum(1).tolist()
        out.update({int(t): int(k) for t, k in zip(tid, n, strict=True)})
    return [out[t] for t in sorted(out)]


def _next_token_batches(batches: list[dict], positions: str, max_samples: int | None, seed: int,
                        samples: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    tids = _text_ids(batches)
    found: dict[tuple[int, int], tuple[int, int, int]] = {}  # (text, pos) -> (token after it, batch, row)
    lengths: dict[int, int] = {}
    for b, (batch, tid) in enumerate(zip(batches, tids, strict=True)):
        ids = torch.as_tensor(batch["input_ids"])
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        for r in range(ids.shape[0]):
            real = torch.nonzero(mask[r]).reshape(-1).tolist()
            if real and real != list(range(real[0], real[0] + len(real))):
                raise ValueError("next-token batches need contiguous tokens (no holes in the attention mask)")
            if real and real[0] != 0:
                raise ValueError("next-token batches must be right-padded: positions count from the first token "
                                 "(build them with target_batches, or set tokenizer.padding_side = 'right')")
            lengths[int(tid[r])] = len(real)
            for k in range(len(real) - 1):
                found[(int(tid[r]), k)] = (int(ids[r, k + 1]), b, r)
    if samples is None:
        n_texts = max(lengths) + 1 if lengths else 0
        samples = draw_samples([lengths.get(t, 0) for t in range(n_texts)], positions, max_samples, seed)
    chosen = []
    for t, p_ in samples:
        if (t, p_) not in found:
            raise ValueError(f"sample (text {t}, position {p_}) has no observed next token in these batches")
        chosen.append((t, p_, *found[(t, p_)]))
    chosen.sort(key=lambda x: (x[0], x[1]))
    per_batch: dict[int, list[tuple[int, tuple]]] = {}
    for sid, item in enumerate(chosen):
        per_batch.setdefault(item[3], []).append((sid, item))
    out = []
    for b in sorted(per_batch):
        items = per_batch[b]
        used = sorted({it[4] for _, it in items})
        new_row = {r: i for i, r in enumerate(used)}
        src = batches[b]
        nb = {k: torch.as_tensor(v)[used] for k, v in src.items()
              if k in ("input_ids", "attention_mask", "token_type_ids") and v is not None}
        nb["sample_row"] = torch.as_tensor([new_row[it[4]] for _, it in items], dtype=torch.long)
        nb["sample_pos"] = torch.as_tensor([it[1] for _, it in items], dtype=torch.long)
        nb["sample_text"] = torch.as_tensor([it[0] for _, it in items], dtype=torch.long)
        nb["labels"] = torch.as_tensor([it[2] for _, it in items], dtype=torch.long)
        nb["index"] = torch.as_tensor([sid for sid, _ in items], dtype=torch.long)
        out.append(nb)
    return out


@torch.no_grad()
def predicted_labels(model: Any, batches: Iterable[Any], device: str | torch.device = "cpu") -> np.ndarray:
    """argmax of the full model's logits per input, in input order (the ``predicted`` target)."""
    from .extract import _prepare

    base = _adapter(model).model
    was = base.training
    base.eval()
    preds, order = [], []
    try:
        for batch in batches:
            args, kw, _, index = _prepare(batch, torch.device(device))
            out = model(*args, **kw)
            lg = getattr(out, "logits", out)
            lg = lg[0] if isinstance(lg, (tuple, list)) else lg
            if lg.ndim == 3:
                raise ValueError("--target predicted needs a sequence classifier's logits, not a language model's")
            preds.append(lg.argmax(-1).reshape(-1).cpu())
            order.append(None if index is None else torch.as_tensor(index).reshape(-1))
    finally:
        base.train(was)
    p = torch.cat(preds)
    if order and all(o is not None for o in order):
        p = p[torch.argsort(torch.cat(order))]
    return p.numpy().astype(np.int64)


def samples_for_target(batches: Iterable[Any], target: str, *, positions: str = "all",
                       max_samples: int | None = MAX_SAMPLES, seed: int = 0, labels: Sequence[int] | None = None,
                       model: Any = None, device: str | torch.device = "cpu",
                       samples: Sequence[tuple[int, int]] | None = None) -> list[Any]:
    """Ready batches turned into the samples of `target`: for ``next-token`` one sample per (text, position)
    drawn as `positions` / `max_samples` / `seed` say; for ``label`` the `labels` (one per input, in input
    order); for ``predicted`` the model's own argmax (needs `model`); ``head`` as they are. Each batch then
    carries ``sample_text`` (the text index of every sample). ``samples``: explicit (text, position) pairs to
    keep instead of the draw (`draw_samples`; how the ranks of a torchrun launch share one draw)."""
    _check_name(target)
    if target == "next-token":
        return _next_token_batches(_check_dicts(batches), positions, max_samples, seed, samples)
    batches = list(batches)
    if target == "predicted":
        if model is None:
            raise ValueError("--target predicted needs the model to find its predicted classes: pass model=")
        labels = predicted_labels(model, batches, device)
    if target in ("label", "predicted") and labels is not None:
        lab = np.asarray(labels).reshape(-1)
        out, k = [], 0
        for b in batches:
            if not isinstance(b, dict):
                raise ValueError("labels for (x, y) or tensor batches go in the batches themselves: give dicts")
            n = int(next(v for v in b.values() if isinstance(v, torch.Tensor)).shape[0])
            idx = np.arange(k, k + n) if b.get("index") is None else np.asarray(b["index"]).reshape(-1)
            if idx.max(initial=-1) >= lab.size:
                raise ValueError(f"{lab.size} labels for more inputs: give one label per input")
            out.append({**b, "labels": torch.as_tensor(lab[idx], dtype=torch.long),
                        "sample_text": torch.as_tensor(idx, dtype=torch.long)})
            k += n
        if k != lab.size:
            raise ValueError(f"{lab.size} labels for {k} inputs: give one label per input")
        return out
    return batches


def target_batches(tokenizer: Any, texts: Sequence[str], *, target: str, positions: str = "all",
                   max_samples: int | None = MAX_SAMPLES, seed: int = 0, labels: Sequence[int] | None = None,
                   batch_size: int = 8, max_length: int = 256, model: Any = None,
                   device: str | torch.device = "cpu",
                   samples: Sequence[tuple[int, int]] | None = None) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches of `texts` holding the samples of `target` (see `samples_for_target`).

    Next-token batches are right-padded (positions count from the first token) and keep only the texts that
    have a drawn sample; ``predicted`` runs `model` once over the texts for its argmax.
    """
    from .extract import text_batches

    _check_name(target)
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string: wrap it in a list")
    texts = list(texts)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts: give one label per text")
    side = getattr(tokenizer, "padding_side", "right")
    if target == "next-token":
        tokenizer.padding_side = "right"
    try:
        batches = text_batches(tokenizer, texts, batch_size=batch_size, max_length=max_length)
    finally:
        tokenizer.padding_side = side
    return samples_for_target(batches, target, positions=positions, max_samples=max_samples, seed=seed,
                              labels=labels, model=model, device=device, samples=samples)


def format_target(t: dict[str, Any]) -> str:
    """One line for the terminal: what the local logit read."""
    parts = [f"  target: {t['kind']}"]
    if t.get("kind") == "next-token":
        n = t.get("n_samples")
        ms = t.get("max_samples")
        parts.append(f"({t.get('positions')} positions, {n} samples from {t.get('n_texts')} texts"
                     + (f", at most {ms} drawn with seed {t.get('seed')}" if ms else "") + ")")
    parts.append(f"- {t.get('readout')}")
    if t.get("head_is_new"):
        parts.append("- NEW RANDOM HEAD (--allow-new-head)")
    return " ".join(parts)


def subset_sample_batches(batches: Sequence[dict], keep: np.ndarray) -> list[dict]:
    """The sample batches restricted to the samples (cache rows) in `keep`, in the same order as
    `subset_cache(cache, keep)` (sorted `keep`): what self-verification of one half re-runs."""
    keep_set = {int(i) for i in np.asarray(keep).reshape(-1)}
    out, k = [], 0
    for b in batches:
        if "sample_row" in b:
            idx = torch.as_tensor(b["index"]).reshape(-1)
            sel = torch.as_tensor([int(i) in keep_set for i in idx.tolist()])
            nb = {key: (v[sel] if key in ("sample_row", "sample_pos", "sample_text", "labels", "index") else v)
                  for key, v in b.items()}
            k += int(idx.numel())
        else:
            n = int(b["input_ids"].shape[0])
            idx = torch.as_tensor(b["index"]).reshape(-1) if b.get("index") is not None else torch.arange(k, k + n)
            sel = torch.as_tensor([int(i) in keep_set for i in idx.tolist()])
            nb = {key: (v[sel] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
                  for key, v in b.items()}
            nb["index"] = idx[sel]
            k += n
        if int(sel.sum()):
            out.append(nb)
    return out
