"""Fine-tuning a reranker on the IR tasks with PEFT LoRA on the MLP of chosen layers (paper section 4, app. F).

Tasks (`TASKS`), all read as one scalar from a sequence-classification head with num_labels = 1 over the
input "query: {q} passage: {p}":

- ``cqtr``: covered query term ratio, MSE;  ``mtfl``: mean of stream-length-normalised TF, MSE. Both
  labels are computed from the text the model sees (the passage cut to `max_words` words first), and
  standardised with the training set's mean / sd, so the MSEs of both tasks are on one scale (z units).
- ``relevance``: a ranking loss over each query's candidates, RankNet (pairwise logistic, the default) or
  ListNet (softmax, target weights 2^rel - 1); metric NDCG@10. On the embedded pool the grades are DERIVED
  (ir.data.derived_relevance). docs/reranker.md has the measured comparison.

LoRA: rank 8 (alpha 16) on the MLP projections of `layers` (models.lora_config), the new head trained too
after a ridge linear probe sets it (LP-FT), AdamW with warm-up + linear decay and clipping (the lr is the
caller's: the reranker uses 2e-3, docs/reranker.md says why). The untuned reference is the same model with
the same freshly initialised head and no LoRA (what the paper's "start" columns measure).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from hedonic_neurons.ir.embedded import PairSet
from hedonic_neurons.ir.features import FEATURE_NAMES, IRFeatures, task_targets
from hedonic_neurons.ir.metrics import mean_ndcg

log = logging.getLogger(__name__)

TASKS = ("cqtr", "mtfl", "relevance")
TASK_NAMES = {"cqtr": "Covered Query Term Ratio", "mtfl": "Mean of Normalized Term Frequency",
              "relevance": "Relevance Modelling (derived labels)"}


def check_task(task: str) -> str:
    """The task name, or a one-line error naming the valid ones (and the closest)."""
    if task not in TASKS:
        import difflib

        close = difflib.get_close_matches(task, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {task!r}{hint}; use one of {', '.join(TASKS)}")
    return task


def truncate_words(text: str, max_words: int | None) -> str:
    return text if not max_words else " ".join(text.split()[:max_words])


@dataclasses.dataclass
class TaskData:
    """Pairs of one split with model inputs, raw labels, training-standardised labels and MSLR features."""

    pairs: PairSet
    texts: list[str]
    y: np.ndarray  # raw label (CQTR / mean TF/L) or derived grade (relevance)
    y_std: np.ndarray  # standardised label (regression) or grade (relevance)
    features: np.ndarray  # (n, len(FEATURE_NAMES))


def build_task_data(task: str, pairs: PairSet, featurizer: IRFeatures, max_words: int | None = 60,
                    norm: tuple[float, float] | None = None) -> tuple[TaskData, tuple[float, float]]:
    """Labels and features of `pairs` for `task`; `norm` = (mean, sd) of the training labels (computed
    here when None: pass the training split's to the OOD split)."""
    check_task(task)
    passages = [truncate_words(p, max_words) for p in pairs.passages]
    pairs = dataclasses.replace(pairs, passages=passages)
    feats = featurizer.transform(pairs.queries, passages)
    if task == "relevance":
        y = pairs.rel.astype(np.float64)
        norm = norm or (0.0, 1.0)
        y_std = y.copy()
    else:
        y = task_targets(task, pairs.queries, passages)
        if norm is None:
            sd = float(y.std())
            norm = (float(y.mean()), sd if sd > 0 else 1.0)
        y_std = (y - norm[0]) / norm[1]
    return TaskData(pairs, pairs.texts(), y, y_std, feats), norm


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning hyperparameters (saved beside the adapter; nested as RerankerConfig.finetune)."""

    HELP: ClassVar[dict[str, str]] = {
        "rank": "LoRA rank", "alpha": "LoRA alpha", "lr": "LoRA learning rate (AdamW)",
        "head_lr": "learning rate of the fresh classification head", "epochs": "fine-tuning epochs",
        "batch_size": "pairs per step", "warmup": "fraction of steps with a linear warm-up",
        "max_grad_norm": "gradient clipping (0 = off)", "head_init": "ridge: linear-probe the head first (LP-FT)",
        "head_init_pairs": "pairs of the linear probe (none: a quarter of n_train within 100..800)",
        "rank_loss": "relevance task: pairwise RankNet or listwise ListNet",
    }
    CHOICES: ClassVar[dict[str, list]] = {"head_init": ["ridge", "random"], "rank_loss": ["ranknet", "listnet"]}

    task: str = "cqtr"
    layers: tuple[int, ...] = (1, 2, 3, 4)
    rank: int = 8
    alpha: float = 16.0
    # LoRA parameters (AdamW). The paper's 2e-4 (batch 128 x 500k pairs) does not move a CPU-sized run; 2e-3
    # is the value every reranker run used (it was RerankerConfig.lr), now the one default
    lr: float = 2e-3
    head_lr: float = 2e-3  # the fresh classification head (random init: it needs a larger step)
    epochs: int = 1
    batch_size: int = 8  # pairs per step (regression); relevance: one query's candidates per step x this/per_query
    max_length: int = 128
    warmup: float = 0.1  # fraction of the steps with a linear warm-up; then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping (0 = off), as transformers' Trainer does by default
    head_init: str = "ridge"  # "ridge": linear-probe the new head first (LP-FT); "random": as loaded
    head_init_pairs: int | None = 800  # training pairs the linear probe is fitted on (None: the reranker's
    # rule, a quarter of its n_train within 100..800)
    rank_loss: str = "ranknet"  # relevance only: "ranknet" (pairwise logistic) or "listnet" (docs/reranker.md)
    seed: int = 0
    device: str = "cpu"


def _encoded(tokenizer: Any, texts: list[str], batch_size: int, max_length: int, device: str,
             progress: bool = False):
    """Tokenized batches of `texts` on `device` (what every scoring pass feeds the model)."""
    it = range(0, len(texts), batch_size)
    for s in tqdm(it, desc="score", disable=not progress or bool(os.environ.get("TQDM_DISABLE"))):
        yield tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)


def score(model: torch.nn.Module, tokenizer: Any, texts: list[str], *, batch_size: int = 32, max_length: int = 128,
          device: str = "cpu", progress: bool = False) -> np.ndarray:
    """The model's scalar output for each text (eval mode, no grad), float64."""
    model.eval()
    out = []
    with torch.no_grad():
        for enc in _encoded(tokenizer, texts, batch_size, max_length, device, progress):
            out.append(model(**enc).logits[:, 0].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def task_metric(task: str, preds: np.ndarray, data: TaskData) -> dict[str, float]:
    """{"mse": ...} on the standardised label (regression) or {"ndcg@10": ...} (relevance), and "M":
    the paper's M (-MSE or NDCG@10), larger is better."""
    if task == "relevance":
        v = mean_ndcg(data.pairs.qids, preds, data.y, k=10)
        return {"ndcg@10": v, "M": v}
    mse = float(np.mean((np.asarray(preds) - data.y_std) ** 2))
    return {"mse": mse, "M": -mse}


def peft_model(model: torch.nn.Module, layers, *, rank: int = 8, alpha: float = 16.0, seed: int = 0):
    """`model` wrapped with LoRA (rank `rank`) on the MLP modules of `layers` and a trainable head."""
    from peft import get_peft_model

    from hedonic_neurons.models.lora import lora_config

    torch.manual_seed(seed)
    return get_peft_model(model, lora_config(model, list(layers), r=rank, alpha=alpha))


def _listnet(scores: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """ListNet (Cao et al., 2007): cross-entropy of the scores' softmax against target weights 2^rel - 1."""
    gain = 2.0 ** rel - 1.0
    p = gain / gain.sum()
    return -(p * torch.log_softmax(scores, dim=0)).sum()


def _ranknet(scores: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """RankNet (Burges et al., 2005): mean logistic loss log(1 + e^-(s_i - s_j)) over the pairs with rel_i > rel_j."""
    diff = scores[:, None] - scores[None, :]
    pref = (rel[:, None] > rel[None, :]).float()
    return (torch.nn.functional.softplus(-diff) * pref).sum() / pref.sum().clamp(min=1.0)


RANK_LOSSES = {"ranknet": _ranknet, "listnet": _listnet}


def check_rank_loss(name: str) -> str:
    """The ranking loss name, or a one-line error naming the valid ones."""
    if name not in RANK_LOSSES:
        raise ValueError(f"rank_loss {name!r}: use one of {', '.join(RANK_LOSSES)}")
    return name


def ridge_head_init(model: torch.nn.Module, tokenizer: Any, data: TaskData, cfg: FinetuneConfig) -> dict:
    """Set the trainable head to a ridge fit of the (standardised) labels on its input features.

    LP-FT (Kumar et al., 2022): a linear probe before fine-tuning. With a random head the gradient
    reaching the LoRA weights is scaled by the head's tiny weights and CPU-sized runs sat on a plateau
    (the loss at the label variance for hundreds of steps, measured on MiniLM / CQTR, docs/reranker.md).
    For relevance the fit is within queries (features and grades centred per query): ranking compares a
    query's candidates only.
    """
    from sklearn.linear_model import RidgeCV

    from hedonic_neurons.models import get_adapter

    head = get_adapter(model).head()
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda mod, args: feats.append(args[0].detach()))
    n = min(len(data.texts), int(cfg.head_init_pairs if cfg.head_init_pairs is not None
                                 else min(800, max(100, len(data.texts) // 4))))
    rows = []
    model.eval()
    try:
        with torch.no_grad():
            for enc in _encoded(tokenizer, data.texts[:n], 32, cfg.max_length, cfg.device):
                model(**enc)
                x = feats.pop()
                if x.ndim == 3:  # decoder heads score every position; the model reads the last real token
                    am = enc["attention_mask"]
                    last = am.shape[1] - 1 - am.flip(1).argmax(1)
                    x = x[torch.arange(x.shape[0], device=x.device), last]
                rows.append(x.double().cpu())
    finally:
        hook.remove()
    X = torch.cat(rows).numpy()
    y = np.array(data.y_std[:n], dtype=np.float64)  # a copy: the centring below must not touch the labels
    has_bias = getattr(head, "bias", None) is not None
    if cfg.task == "relevance":
        # Ranking only compares a query's candidates: fit within queries (features and grades centred
        # per query), else the probe spends itself on what separates queries (measured: worse than untuned).
        qids = np.asarray(data.pairs.qids[:n])
        for q in dict.fromkeys(qids.tolist()):
            m = qids == q
            X[m] -= X[m].mean(0)
            y[m] -= y[m].mean()
    r = RidgeCV(alphas=np.logspace(-2, 4, 13), fit_intercept=has_bias).fit(X, y)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(r.coef_, dtype=head.weight.dtype).reshape(head.weight.shape))
        if has_bias:
            head.bias.fill_(float(r.intercept_))
    return {"pairs": n, "alpha": float(r.alpha_), "r2_in_sample": float(r.score(X, y))}


def train(model: torch.nn.Module, tokenizer: Any, data: TaskData, cfg: FinetuneConfig,
          progress: bool = True) -> list[float]:
    """AdamW on the trainable (LoRA + head) parameters; returns the per-step losses."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters; wrap it with peft_model(...) first")
    lora = [p for n, p in named if "lora_" in n]
    head = [p for n, p in named if "lora_" not in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}])
    model.train()
    model.to(cfg.device)
    losses: list[float] = []
    if cfg.task == "relevance":
        qids = np.asarray(data.pairs.qids)
        groups = [np.flatnonzero(qids == q) for q in dict.fromkeys(data.pairs.qids)]
        groups = [g for g in groups if data.y[g].max() > 0]  # nothing to rank without a relevant one
        per_step = max(1, cfg.batch_size // max(1, len(groups[0]) if groups else 1))
        steps = []
        for _ in range(cfg.epochs):
            perm = rng.permutation(len(groups))
            steps += [[groups[j] for j in perm[i:i + per_step]] for i in range(0, len(perm), per_step)]
    else:
        order = [rng.permutation(len(data.texts)) for _ in range(cfg.epochs)]
        steps = [o[i:i + cfg.batch_size] for o in order for i in range(0, len(o), cfg.batch_size)]
    y = torch.as_tensor(data.y_std, dtype=torch.float32)
    rank_fn = RANK_LOSSES[cfg.rank_loss]
    # Warm-up then linear decay (the Trainer's default schedule): with a constant rate a CPU-sized run
    # either does not move (2e-4) or collapses to predicting the mean (5e-3), measured on MiniLM / CQTR.
    n_warm = max(1, int(round(cfg.warmup * len(steps))))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / n_warm, max(0.0, (len(steps) - s) / max(1, len(steps) - n_warm))))
    params = lora + head
    for step in tqdm(steps, desc=f"fine-tune {cfg.task}", disable=not progress or bool(os.environ.get("TQDM_DISABLE"))):
        idx = np.concatenate(step) if cfg.task == "relevance" else step
        enc = tokenizer([data.texts[i] for i in idx], padding=True, truncation=True, max_length=cfg.max_length,
                        return_tensors="pt").to(cfg.device)
        out = model(**enc).logits[:, 0].float()
        if cfg.task == "relevance":
            loss, s = 0.0, 0
            for g in step:
                loss = loss + rank_fn(out[s:s + len(g)], y[g].to(out.device))
                s += len(g)
            loss = loss / len(step)
        else:
            loss = torch.nn.functional.mse_loss(out, y[idx].to(out.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning loss is {float(loss)} at step {len(losses) + 1} of {len(steps)}; lower the learning "
                f"rate (--lr, now {cfg.lr:g}) or check the labels for NaN / inf")
        opt.zero_grad()
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def finetune(model: torch.nn.Module, tokenizer: Any, train_data: TaskData, ood_data: TaskData,
             cfg: FinetuneConfig, out_dir: str | Path | None = None, progress: bool = True):
    """Wrap `model` with LoRA, measure the untuned model on OOD, train, measure again; save the adapter.

    Returns (peft model, report dict with before/after OOD metrics, losses and seconds).
    """
    check_task(cfg.task)
    if cfg.head_init not in ("ridge", "random"):
        raise ValueError(f"head_init {cfg.head_init!r}: use 'ridge' or 'random'")
    check_rank_loss(cfg.rank_loss)
    pm = peft_model(model, cfg.layers, rank=cfg.rank, alpha=cfg.alpha, seed=cfg.seed)
    pm.to(cfg.device)
    t0 = time.perf_counter()
    ood_scores: dict[str, np.ndarray] = {}  # OOD scores per model, for the per-query comparison (relevance)
    with pm.disable_adapter():  # untuned: base MLPs; the head is the same fresh head
        ood_scores["untuned"] = score(pm, tokenizer, ood_data.texts, max_length=cfg.max_length, device=cfg.device)
        before = task_metric(cfg.task, ood_scores["untuned"], ood_data)
    before_in = None
    probe = None
    if cfg.head_init == "ridge":
        probe = ridge_head_init(pm, tokenizer, train_data, cfg)
        ood_scores["head_only"] = score(pm, tokenizer, ood_data.texts, max_length=cfg.max_length, device=cfg.device)
        probe["ood"] = task_metric(cfg.task, ood_scores["head_only"], ood_data)
        log.info("linear-probe head: OOD %s", probe["ood"])
    losses = train(pm, tokenizer, train_data, cfg, progress=progress)
    t_train = time.perf_counter() - t0
    ood_scores["fine_tuned"] = score(pm, tokenizer, ood_data.texts, max_length=cfg.max_length, device=cfg.device)
    after = task_metric(cfg.task, ood_scores["fine_tuned"], ood_data)
    per_query = None
    if cfg.task == "relevance":  # NDCG@10 per OOD query and model: benchmarks/paired_queries.py reads it
        from hedonic_neurons.ir.metrics import per_query_ndcg

        per_query = {}
        for name, sc in ood_scores.items():
            qs, vals = per_query_ndcg(ood_data.pairs.qids, sc, ood_data.y, k=10)
            per_query[name] = vals.tolist()
        per_query["qids"] = qs
    report = {
        "task": cfg.task, "ood_before": before, "ood_after": after, "in_dist_before": before_in,
        "ood_head_only": probe["ood"] if probe else None, "head_init": probe, "ood_per_query": per_query,
        "n_train": len(train_data.texts), "n_ood": len(ood_data.texts), "steps": len(losses),
        "loss_first": losses[0] if losses else None, "loss_last_10": float(np.mean(losses[-10:])) if losses else None,
        "train_seconds": round(t_train, 2), "config": dataclasses.asdict(cfg),
        "relevance_labels": "derived" if cfg.task == "relevance" else "computed from text",
    }
    if out_dir is not None:
        save_adapter(pm, out_dir)
    log.info("fine-tuned %s: OOD %s -> %s", cfg.task, before, after)
    return pm, report


def save_adapter(pm: torch.nn.Module, out_dir: str | Path) -> Path:
    """PEFT `save_pretrained` (safetensors) into out_dir, atomically (temp folder then rename)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    pm.save_pretrained(str(tmp), safe_serialization=True)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path):
    """The base `model` with the saved adapter (and head) from `adapter_dir`, in eval mode."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(model, str(adapter_dir))
    pm.eval()
    return pm


def task_data_to_json(d: TaskData) -> dict:
    """`d` as plain JSON (a reranker run's data/*.json), read back by `task_data_from_json`."""
    p = d.pairs
    return {"split": p.split, "relevance": p.relevance, "qids": p.qids, "queries": p.queries, "pids": p.pids,
            "passages": p.passages, "rel": p.rel.tolist(), "bm25": p.bm25.tolist(), "rank": p.rank.tolist(),
            "y": d.y.tolist(), "y_std": d.y_std.tolist(), "features": d.features.tolist(),
            "feature_names": list(FEATURE_NAMES)}


def task_data_from_json(j: dict) -> TaskData:
    """The TaskData that `task_data_to_json` wrote."""
    p = PairSet(j["qids"], j["queries"], j["pids"], j["passages"], np.asarray(j["rel"], dtype=np.int64),
                np.asarray(j["bm25"]), np.asarray(j["rank"], dtype=np.int64), j["split"], j["relevance"])
    return TaskData(p, p.texts(), np.asarray(j["y"]), np.asarray(j["y_std"]), np.asarray(j["features"]))


def drop_subset(d: TaskData, n: int | None) -> TaskData:
    """The first whole queries of `d` holding at most `n` pairs (at least one query); None or 0: all of `d`."""
    if not n or n >= len(d.texts):
        return d
    qids = list(d.pairs.qids)
    keep: list[int] = []
    for q in dict.fromkeys(qids):
        rows = [i for i, x in enumerate(qids) if x == q]
        if keep and len(keep) + len(rows) > n:
            break
        keep += rows
    idx = np.asarray(keep, dtype=np.int64)
    return TaskData(d.pairs.subset(idx), [d.texts[i] for i in idx], d.y[idx], d.y_std[idx], d.features[idx])
