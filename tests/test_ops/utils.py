"""Inputs shared by the op tests."""
import torch


def make_inputs(n, c, dtype=torch.float32, scale=3.0, background=True, ignore_index=None,
                seed=0, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    pred = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)
    high = c + 1 if background else c
    labels = torch.randint(0, high, (n,), generator=g)
    if ignore_index is not None and n > 0:
        labels[torch.rand(n, generator=g) < 0.2] = ignore_index
    return pred, labels.to(device)


def rel_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs() / expected.abs().clamp_min(1e-30)).max().item()
