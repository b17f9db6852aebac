"""The gated MLP: the interface in COMMON.md, forward_from consistency, persistence, deterministic training."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hedonic_neurons.models.gated_mlp import (
    GatedMLPClassifier,
    accuracy,
    build_classifier,
    random_shift,
    train_classifier,
)


def test_shapes_and_forward_from():
    torch.manual_seed(0)
    m = GatedMLPClassifier(d_in=20, d_model=16, d_ff=32, n_blocks=4, n_classes=3).eval()
    x = torch.randn(7, 20)
    hs = m.hidden_states(x)
    assert len(hs) == 5 and all(h.shape == (7, 16) for h in hs)
    assert m.blocks[0].up.bias is None and m.blocks[0].down.bias is None
    out = m(x)
    for layer in range(1, 6):
        assert torch.allclose(m.forward_from(hs[layer - 1], layer), out, atol=1e-6)
    with pytest.raises(ValueError):
        m.forward_from(hs[0], 6)


def test_block_formula():
    torch.manual_seed(0)
    m = GatedMLPClassifier(d_in=4, d_model=6, d_ff=8, n_blocks=1, n_classes=2)
    b = m.blocks[0]
    h = torch.randn(3, 6)
    ref = h + (torch.nn.functional.silu(h @ b.gate.weight.T) * (h @ b.up.weight.T)) @ b.down.weight.T
    assert torch.allclose(b(h), ref, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    m = build_classifier(1, d_in=10, d_model=8, d_ff=16, n_classes=4)
    m.save(tmp_path / "m.safetensors")
    m2 = GatedMLPClassifier.load(tmp_path / "m.safetensors")
    x = torch.randn(5, 10)
    assert torch.equal(m(x), m2(x))


def test_random_shift_moves_pixels():
    x = torch.zeros(1, 784)
    x[0, 14 * 28 + 14] = 1.0
    y = random_shift(x, torch.Generator().manual_seed(0), 2, 0.0)
    assert float(y.sum()) == 1.0
    # values: each image moves by the (dy, dx) the generator draws, within +-2, and pixels shifted in from
    # outside take the fill value (an identity, a wrap-around or a transposed shift fails here)
    b = 16
    xs = torch.zeros(b, 28, 28)
    xs[:, 14, 14] = 1.0
    xs[:, 0, 0] = 2.0  # a corner pixel: shifted out of the frame for positive offsets
    ys = random_shift(xs.reshape(b, -1), torch.Generator().manual_seed(3), 2, -0.5).view(b, 28, 28)
    g = torch.Generator().manual_seed(3)
    dx = torch.randint(0, 5, (b,), generator=g)
    dy = torch.randint(0, 5, (b,), generator=g)
    moved = 0
    for i in range(b):
        sy, sx = 2 - int(dy[i]), 2 - int(dx[i])  # out[r, c] = in[r - sy, c - sx]
        want = torch.full((28, 28), -0.5)
        rs, cs = slice(max(sy, 0), 28 + min(sy, 0)), slice(max(sx, 0), 28 + min(sx, 0))
        rs_in, cs_in = slice(max(-sy, 0), 28 + min(-sy, 0)), slice(max(-sx, 0), 28 + min(-sx, 0))
        want[rs, cs] = xs[i][rs_in, cs_in]
        assert torch.equal(ys[i], want), i
        assert ys[i, 14 + sy, 14 + sx] == 1.0
        moved += (sy, sx) != (0, 0)
    assert moved >= b // 2


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared CPU, 2-thread barriers make training several times slower."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_training_is_deterministic_and_learns(one_thread):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    tr, te = np.arange(0, 1400), np.arange(1400, len(y))
    accs, weights = [], []
    for _ in range(2):
        m = build_classifier(0, d_in=64, d_model=32, d_ff=64, n_blocks=2)
        train_classifier(m, X[tr], y[tr], epochs=8, lr=3e-3, seed=0, progress=False)
        accs.append(accuracy(m, X[te], y[te]))
        weights.append(m.head.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert accs[0] > 0.85
    m = build_classifier(0, d_in=64, d_model=32, d_ff=64, n_blocks=2)
    train_classifier(m, X[tr], y[tr], epochs=4, lr=3e-3, seed=0, shuffle_labels=True, progress=False)
    assert accuracy(m, X[te], y[te]) < 0.4
