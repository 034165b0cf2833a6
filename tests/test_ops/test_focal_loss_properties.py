"""Property-based tests: the fused op equals the float64 oracle over random configurations."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from focal_plugin.ops import reference, sigmoid_focal_loss, softmax_focal_loss

DTYPE_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=2e-7),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-3),
    torch.float16: dict(rtol=2e-3, atol=1e-4),
}


@st.composite
def focal_cases(draw, sigmoid: bool):
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 19))
    dtype = draw(st.sampled_from(list(DTYPE_TOL)))
    gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0]))
    alpha_kind = draw(st.sampled_from(['none', 'scalar', 'per_class']))
    weight_kind = draw(st.sampled_from(['none', 'row', 'element'] if sigmoid else ['none', 'row']))
    target_kind = draw(st.sampled_from(['labels', 'soft'] if sigmoid else ['labels']))
    reduction = draw(st.sampled_from(['none', 'mean', 'sum']))
    use_avg = reduction == 'mean' and draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.5, 3.0, 12.0]))

    g = torch.Generator().manual_seed(seed)
    pred = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    num_labels = c + 1 if sigmoid else c
    labels = torch.randint(0, num_labels, (n, ), generator=g)
    labels[torch.rand(n, generator=g) < 0.15] = -1  # ignored rows
    target = torch.rand(n, c, generator=g, dtype=torch.float64).to(dtype) \
        if target_kind == 'soft' else labels
    alpha = {
        'none': None,
        'scalar': float(torch.rand(1, generator=g)),
        'per_class': torch.rand(c, generator=g, dtype=torch.float64).tolist(),
    }[alpha_kind]
    weight = {
        'none': None,
        'row': torch.rand(n, generator=g, dtype=torch.float64),
        'element': torch.rand(n, c, generator=g, dtype=torch.float64),
    }[weight_kind]
    avg_factor = float(torch.rand(1, generator=g) * 10 + 0.5) if use_avg else None
    return pred, target, weight, gamma, alpha, reduction, avg_factor


def _check(fn, ref_fn, case):
    pred, target, weight, gamma, alpha, reduction, avg_factor = case
    dtype = pred.dtype
    x = pred.clone().requires_grad_(True)
    w = None if weight is None else weight.to(torch.float64 if dtype == torch.float64 else
                                              torch.float32)
    loss = fn(x, target, w, gamma, alpha, reduction, avg_factor)
    x64 = pred.double().requires_grad_(True)
    t64 = target.double() if target.is_floating_point() else target
    w64 = None if w is None else w.double()
    ref = ref_fn(x64, t64, w64, gamma, alpha, reduction, avg_factor)
    tol = DTYPE_TOL[dtype]
    if reduction == 'none':
        assert loss.dtype == dtype and loss.shape == ref.shape
        torch.testing.assert_close(loss.double(), ref.to(dtype).double(), **tol)
    else:
        assert loss.shape == () and loss.dtype == (torch.float64 if dtype == torch.float64
                                                   else torch.float32)
        scale = max(1.0, pred.numel())  # a sum of many rounded terms
        torch.testing.assert_close(loss.double(), ref, rtol=tol['rtol'], atol=tol['atol'] * scale)
    loss.sum().backward()
    ref.sum().backward()
    grad_ref = torch.nan_to_num(x64.grad, nan=0.0)  # oracle's 0*inf at saturated gamma<1
    torch.testing.assert_close(x.grad.double(), grad_ref.to(dtype).double(), rtol=tol['rtol'],
                               atol=tol['atol'] * 10)


@given(focal_cases(sigmoid=True))
def test_sigmoid_matches_oracle(case):
    _check(sigmoid_focal_loss, reference.sigmoid_focal_loss, case)


@given(focal_cases(sigmoid=False))
def test_softmax_matches_oracle(case):
    _check(softmax_focal_loss, reference.softmax_focal_loss, case)


@given(st.integers(1, 30), st.integers(1, 12), st.sampled_from([0.0, 1.0, 2.0, 2.5]))
def test_loss_is_nonnegative_and_bounded_by_cross_entropy(n, c, gamma):
    # (1 - p_t)^gamma <= 1, so FL <= alpha_t * CE, with equality at gamma 0.
    pred = torch.randn(n, c) * 4
    labels = torch.randint(0, c + 1, (n, ))
    fl = sigmoid_focal_loss(pred, labels, gamma=gamma, alpha=None, reduction='none')
    ce = sigmoid_focal_loss(pred, labels, gamma=0.0, alpha=None, reduction='none')
    assert (fl >= 0).all()
    assert (fl <= ce * (1 + 1e-6)).all()
    if gamma == 0.0:
        torch.testing.assert_close(fl, ce)


@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_well_classified_examples_are_down_weighted(gamma):
    # The paper's point: at p_t = 0.9 the loss is (0.1)^gamma times the CE.
    logit = torch.log(torch.tensor([[9.0]]))  # sigmoid = 0.9
    fl = sigmoid_focal_loss(logit, torch.tensor([0]), gamma=gamma, alpha=None, reduction='sum')
    ce = sigmoid_focal_loss(logit, torch.tensor([0]), gamma=0.0, alpha=None, reduction='sum')
    torch.testing.assert_close(fl / ce, torch.tensor(0.1**gamma), rtol=1e-5, atol=0)
