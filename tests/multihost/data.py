"""The matrix both processes of the multi-host test hold half of, and the reference run."""

import numpy as np

RANK = 4


def matrix():
    rng = np.random.default_rng(0)
    spectrum = np.concatenate([np.linspace(4, 2, RANK), np.linspace(1, 0.1, 20 - RANK)])
    return (rng.standard_normal((64, 20)) * spectrum[None, :]).astype(np.float32)
