"""The CLI loads only the asked command's module, and an unsupported model is refused from files alone."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys

import pytest

from hedonic_neurons import cli
from hedonic_neurons.models.precheck import precheck_config


def test_command_table_matches_the_modules():
    for module in cli._COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        for name in sub.choices:
            assert cli.COMMANDS.get(name) == module, f"{name} is registered by {module}: add it to cli.COMMANDS"
    assert set(cli.COMMANDS.values()) == set(cli._COMMAND_MODULES)


def test_command_detection():
    assert cli._command_in(["--quiet", "valuations", "x"]) == "valuations"
    assert cli._command_in(["-h"]) is None
    assert cli._command_in([]) is None
    assert set(cli.build_parser(only="fetch")._subparsers._group_actions[0].choices) == {"fetch"}
    assert set(cli.build_parser()._subparsers._group_actions[0].choices) == set(cli.COMMANDS)


def _cfg(tmp_path, name, **cfg):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_precheck_refuses_on_evidence_and_passes_the_rest(tmp_path):
    gpt2 = _cfg(tmp_path, "gpt2", model_type="gpt2", n_embd=64, n_layer=2, n_head=2)
    with pytest.raises(ValueError, match=r"'gpt2' writes its MLP with Conv1D modules \(c_fc, c_proj\).*--adapter"):
        precheck_config(str(gpt2))
    moe = _cfg(tmp_path, "moe", model_type="mixtral", num_local_experts=8, hidden_size=64)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        precheck_config(str(moe))
    unknown = _cfg(tmp_path, "unknown", model_type="not_a_real_arch", hidden_size=64)
    with pytest.raises(ValueError, match="no sequence-classification class.*--adapter"):
        precheck_config(str(unknown))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*re-download"):
        precheck_config(str(bad))
    # supported, remote-code, multimodal and non-local models are left to the meta-device check
    for d in (_cfg(tmp_path, "llama", model_type="llama", hidden_size=64),
              _cfg(tmp_path, "gemma2", model_type="gemma2", hidden_size=64),
              _cfg(tmp_path, "remote", model_type="gpt2", auto_map={"AutoModel": "x.Y"}),
              _cfg(tmp_path, "dense_qwen", model_type="qwen2", num_experts=1)):
        assert precheck_config(str(d)) is None
    assert precheck_config("smollm2") is None
    # a PEFT adapter directory is checked through its local base model
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(gpt2)}))
    with pytest.raises(ValueError, match="Conv1D"):
        precheck_config(str(ad))


def test_cli_refuses_without_importing_torch(tmp_path):
    gpt2 = _cfg(tmp_path, "gpt2", model_type="gpt2", n_embd=64, n_layer=2, n_head=2)
    texts = tmp_path / "t.txt"
    texts.write_text("a\nb\n")
    code = ("import sys; from hedonic_neurons.cli import main; "
            f"rc = main(['--quiet', 'valuations', {str(gpt2)!r}, '--layer', '0', '--texts', {str(texts)!r}]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout.split() == ["False", "False"]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Conv1D" in err[0] and "--adapter module:Class" in err[0]


def _gguf(path, arch: str, blocks: int):
    """A GGUF header with general.architecture, a tokenizer array before it and <arch>.block_count."""
    import struct

    def s(text):
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [s("general.architecture") + struct.pack("<I", 8) + s(arch),
           s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("bc"),
           s(f"{arch}.block_count") + struct.pack("<II", 4, blocks)]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def test_layer_count_from_files_alone(tmp_path):
    from hedonic_neurons.models.precheck import model_n_layers, precheck_layers

    assert model_n_layers("minilm") == 6 and model_n_layers("smollm2") == 30  # the packaged models
    assert model_n_layers(str(_cfg(tmp_path, "llama", model_type="llama", num_hidden_layers=4))) == 4
    assert model_n_layers(str(_cfg(tmp_path, "gpt2", model_type="gpt2", n_layer=2))) == 2
    assert model_n_layers(str(_cfg(tmp_path, "mm", model_type="llava", text_config={"num_hidden_layers": 7}))) == 7
    assert model_n_layers(str(_gguf(tmp_path / "m.gguf", "llama", 12))) == 12
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "minilm"}))
    assert model_n_layers(str(ad)) == 6
    assert model_n_layers(str(_cfg(tmp_path, "custom", model_type="x"))) is None  # cannot tell: loader checks
    precheck_layers("minilm", (0, 5))
    with pytest.raises(ValueError, match=r"layer\(s\) 6-7 outside this model \(6 layers\): use --layer within 0-5"):
        precheck_layers("minilm", (4, 6, 7), flag="--layer")


@pytest.mark.parametrize("argv, pattern", [
    # a mistyped model path is reported as such, not as the embedded IR data it would read next
    (["valuations", "./no_such_model", "--layer", "1"], r"model path ./no_such_model does not exist"),
    (["reranker", "--model", "./no_such_model"], r"model path ./no_such_model does not exist"),
    # a layer outside the model, from its config, in the common layer syntax
    (["valuations", "minilm", "--layer", "9"], r"layer\(s\) 9 outside this model \(6 layers\): use --layer within 0-5"),
    (["reranker", "--model", "minilm", "--layers", "3-8"], r"layer\(s\) 6-8 outside .*--layers within 0-5"),
    (["valuations", "minilm", "--layer", "1-2"], r"one layer, e.g. --layer 7"),
    (["mnist", "--layers", "h1..h5"], r"h1\.\.h5 as layers 1-5"),
    (["mnist", "--control-layer", "2,3"], r"--control-layer '2,3': name one layer"),
])
def test_refused_before_data_or_weights(argv, pattern, tmp_path, monkeypatch, capsys):
    """One line, from files alone: the data the command would read next is not even looked for."""
    monkeypatch.setenv("HEDONIC_NEURONS_DATA", str(tmp_path / "no_data"))  # the data would fail differently
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main(["--quiet", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "no_data").exists()
