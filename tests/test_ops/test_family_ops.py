"""The focal-loss family's fused ops (quality focal, varifocal, gaussian focal)
against mmdet 3.3.0's own loss functions in float64, and their op contract:
opcheck, torch.compile with parameters that change between calls, thread
determinism, extremes in every dtype, bad input."""
import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from focal_plugin.ops import (gaussian_focal_loss, quality_focal_loss, sigmoid_focal_loss,
                              varifocal_loss)

from .utils import make_inputs

OPS = torch.ops.focal_plugin
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NO_IGNORE = -2**63


def _loss_and_grad(fn, pred, *args, **kwargs):
    x = pred.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    grad_out = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (g, ) = torch.autograd.grad(loss, x, grad_out)
    return loss.detach(), g


def _assert_same(ours, theirs, rtol=1e-9, atol=1e-12):
    (loss, grad), (ref_loss, ref_grad) = ours, theirs
    torch.testing.assert_close(loss, ref_loss.to(loss.dtype), rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)


def _qfl_inputs(n=300, c=13, seed=0):
    pred, labels = make_inputs(n, c, dtype=torch.float64, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    score = torch.rand(n, generator=g, dtype=torch.float64)
    score[::7] = 0.0  # a positive with quality 0 is a valid target
    return pred, labels, score


def _mmdet_gfl():
    return pytest.importorskip('mmdet.models.losses.gfocal_loss')


REDUCTIONS = [('none', None), ('mean', None), ('sum', None), ('mean', 37.0)]


@pytest.mark.parametrize('reduction,avg_factor', REDUCTIONS)
@pytest.mark.parametrize('beta', [0.0, 1.0, 2.0, 2.5])
@pytest.mark.parametrize('weighted', [False, True])
def test_quality_focal_tuple_target_matches_mmdet(reduction, avg_factor, beta, weighted):
    gfl = _mmdet_gfl()
    pred, labels, score = _qfl_inputs()
    weight = torch.rand(300, dtype=torch.float64) if weighted else None
    ours = _loss_and_grad(quality_focal_loss, pred, labels, score, weight, beta, False, reduction,
                          avg_factor)
    theirs = _loss_and_grad(gfl.quality_focal_loss, pred, (labels, score), weight, beta=beta,
                            reduction=reduction, avg_factor=avg_factor)
    _assert_same(ours, theirs)


@pytest.mark.parametrize('reduction,avg_factor', REDUCTIONS)
@pytest.mark.parametrize('activated', [False, True])
def test_quality_focal_soft_target_matches_mmdet(reduction, avg_factor, activated):
    gfl = _mmdet_gfl()
    pred, labels, score = _qfl_inputs()
    soft = torch.zeros_like(pred)
    keep = labels < pred.size(1)
    soft[keep, labels[keep]] = score[keep]
    x = pred.sigmoid() if activated else pred
    ours = _loss_and_grad(quality_focal_loss, x, soft, None, None, 2.0, activated, reduction,
                          avg_factor)
    theirs = _loss_and_grad(gfl.quality_focal_loss_tensor_target, x, soft, None, beta=2.0,
                            activated=activated, reduction=reduction, avg_factor=avg_factor)
    _assert_same(ours, theirs)


def test_quality_focal_activated_tuple_target_matches_mmdet():
    gfl = _mmdet_gfl()
    pred, labels, score = _qfl_inputs()
    p = pred.sigmoid()
    ours = _loss_and_grad(quality_focal_loss, p, labels, score, activated=True)
    theirs = _loss_and_grad(gfl.quality_focal_loss_with_prob, p, (labels, score), None)
    _assert_same(ours, theirs)


@pytest.mark.parametrize('reduction,avg_factor', REDUCTIONS)
@pytest.mark.parametrize('iou_weighted', [True, False])
@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.75), (1.5, 0.5), (0.0, 1.0)])
@pytest.mark.parametrize('weight_kind', [None, 'row', 'element'])
def test_varifocal_matches_mmdet(reduction, avg_factor, iou_weighted, gamma, alpha, weight_kind):
    vfl = pytest.importorskip('mmdet.models.losses.varifocal_loss')
    n, c = 300, 13
    pred, _ = make_inputs(n, c, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    target = torch.rand(n, c, generator=g, dtype=torch.float64)
    target[torch.rand(n, c, generator=g) < 0.8] = 0.0  # mostly negatives, as in training
    weight = {None: None, 'row': torch.rand(n, 1, dtype=torch.float64),
              'element': torch.rand(n, c, dtype=torch.float64)}[weight_kind]
    ours = _loss_and_grad(varifocal_loss, pred, target,
                          None if weight is None else weight.expand(n, c).contiguous()
                          if weight_kind == 'element' else weight, alpha, gamma, iou_weighted,
                          reduction, avg_factor)
    theirs = _loss_and_grad(vfl.varifocal_loss, pred, target, weight, alpha, gamma,
                            iou_weighted, reduction, avg_factor)
    _assert_same(ours, theirs)


def test_varifocal_per_class_alpha_scales_each_class_negatives():
    pred, _ = make_inputs(50, 4, dtype=torch.float64)
    target = torch.zeros(50, 4, dtype=torch.float64)
    target[::3, 1] = 0.7
    alphas = [0.1, 0.2, 0.6, 0.9]
    per_class = varifocal_loss(pred, target, alpha=alphas, reduction='none')
    for c, a in enumerate(alphas):
        scalar = varifocal_loss(pred, target, alpha=a, reduction='none')
        torch.testing.assert_close(per_class[:, c], scalar[:, c])


@pytest.mark.parametrize('reduction,avg_factor', REDUCTIONS)
@pytest.mark.parametrize('alpha,gamma', [(2.0, 4.0), (1.0, 2.0), (0.5, 0.0), (2.5, 1.5)])
@pytest.mark.parametrize('weighted', [False, True])
def test_gaussian_focal_matches_mmdet(reduction, avg_factor, alpha, gamma, weighted):
    gfl = pytest.importorskip('mmdet.models.losses.gaussian_focal_loss')
    n, c = 200, 9
    pred, _ = make_inputs(n, c, dtype=torch.float64)
    p = pred.sigmoid().clamp(1e-4, 1 - 1e-4)  # as CenterNet's heads clamp
    g = torch.Generator().manual_seed(5)
    target = torch.rand(n, c, generator=g, dtype=torch.float64) ** 4
    target[torch.rand(n, c, generator=g) < 0.05] = 1.0  # peaks
    weight = torch.rand(n, c, dtype=torch.float64) if weighted else None
    ours = _loss_and_grad(gaussian_focal_loss, p, target, weight, alpha, gamma, 1.5, 0.5, False,
                          reduction, avg_factor)
    theirs = _loss_and_grad(gfl.gaussian_focal_loss, p, target, weight, alpha=alpha, gamma=gamma,
                            pos_weight=1.5, neg_weight=0.5, reduction=reduction,
                            avg_factor=avg_factor)
    _assert_same(ours, theirs)


def test_gaussian_focal_logits_mode_equals_probability_mode_without_eps():
    pred, _ = make_inputs(100, 6, dtype=torch.float64, scale=2.0)
    target = torch.rand(100, 6, dtype=torch.float64)
    target[::5, 2] = 1.0

    def by_probability(x):
        p = x.sigmoid()
        pos = (target == 1).double()
        return -(pos * (1 - p)**2 * p.log() + (1 - target)**4 * p**2 * (1 - p).log())

    ours = _loss_and_grad(gaussian_focal_loss, pred, target, logits=True, reduction='none')
    theirs = _loss_and_grad(by_probability, pred)
    _assert_same(ours, theirs, rtol=1e-10, atol=1e-12)


@given(n=st.integers(1, 40), c=st.integers(1, 20), beta=st.floats(0, 4), seed=st.integers(0, 99))
def test_quality_focal_labels_with_scores_equal_the_soft_target(n, c, beta, seed):
    pred, labels, score = _qfl_inputs(n, c, seed)
    pred = pred.float()
    soft = torch.zeros_like(pred)
    keep = labels < c
    soft[keep, labels[keep]] = score[keep].float()
    by_labels = _loss_and_grad(quality_focal_loss, pred, labels, score.float(), beta=beta,
                               reduction='none')
    by_soft = _loss_and_grad(quality_focal_loss, pred, soft, beta=beta, reduction='none')
    _assert_same(by_labels, by_soft, rtol=1e-5, atol=1e-6)


@given(n=st.integers(1, 40), c=st.integers(1, 20), gamma=st.floats(0, 4),
       alpha=st.floats(0, 1), seed=st.integers(0, 99))
def test_varifocal_is_nonnegative_and_zero_where_the_prediction_is_exact(n, c, gamma, alpha, seed):
    pred, _ = make_inputs(n, c, dtype=torch.float64, seed=seed)
    loss = varifocal_loss(pred, torch.zeros_like(pred), alpha=alpha, gamma=gamma,
                          reduction='none')
    assert bool((loss >= 0).all())
    # A negative predicted with probability exactly 0 costs nothing.
    exact = varifocal_loss(torch.full((n, c), -800.0, dtype=torch.float64),
                           torch.zeros(n, c, dtype=torch.float64), alpha=alpha, gamma=gamma,
                           reduction='sum')
    assert exact.item() == 0.0


# ---------------------------------------------------------------------------
# Op contract.
# ---------------------------------------------------------------------------
def _family_samples():
    pred, labels = make_inputs(23, 7, ignore_index=None)
    soft = torch.rand(23, 7)
    score = torch.rand(23)
    p = pred.sigmoid()
    samples = []
    for reduce_sum in (False, True):
        samples += [
            ('quality_focal_loss', (pred.clone().requires_grad_(), labels, score, None, None,
                                    NO_IGNORE, 2.0, False, reduce_sum)),
            ('quality_focal_loss', (p.clone().requires_grad_(), soft, None, torch.rand(23), None,
                                    NO_IGNORE, 1.5, True, reduce_sum)),
            ('varifocal_loss', (pred.double().requires_grad_(), soft.double(), None, None,
                                torch.rand(7, dtype=torch.float64), NO_IGNORE, 0.75, 2.0, True,
                                reduce_sum)),
            ('varifocal_loss', (pred.half(), soft.half(), None, torch.rand(23, 7), None,
                                NO_IGNORE, 0.5, 1.0, False, reduce_sum)),
            ('gaussian_focal_loss', (p.clone().requires_grad_(), soft, None, None, None,
                                     NO_IGNORE, 2.0, 4.0, 1.0, 1.0, False, reduce_sum)),
            ('gaussian_focal_loss', (pred.bfloat16(), soft.bfloat16(), None, None, None,
                                     NO_IGNORE, 2.0, 4.0, 0.5, 2.0, True, reduce_sum)),
        ]
    return samples


@pytest.mark.parametrize('name,args', _family_samples())
@pytest.mark.parametrize('variant', ['', '_with_grad'])
def test_opcheck(name, args, variant):
    op = getattr(OPS, name if not variant else f'_{name}{variant}')
    torch.library.opcheck(op.default, args)


@pytest.mark.parametrize('name,args', _family_samples())
def test_opcheck_backward(name, args):
    grad_output = torch.rand(()) if args[-1] else torch.rand(args[0].shape)
    torch.library.opcheck(getattr(OPS, f'_{name}_backward').default,
                          (grad_output, args[0].detach(), *args[1:]))


@pytest.mark.parametrize('name,args', _family_samples())
def test_fused_training_gradient_equals_the_backward_kernel(name, args):
    x = args[0].detach().clone().requires_grad_(True)
    loss, unit_grad = getattr(OPS, f'_{name}_with_grad')(x, *args[1:])
    grad_output = torch.tensor(0.7) if args[-1] else torch.full(x.shape, 0.7, dtype=x.dtype)
    expected = getattr(OPS, f'_{name}_backward')(grad_output, x.detach(), *args[1:])
    # Half precision rounds the unit gradient before the scaling: two roundings.
    rtol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(x.dtype, 1e-5)
    torch.testing.assert_close(unit_grad * 0.7, expected, rtol=rtol, atol=1e-6)
    torch.testing.assert_close(loss, getattr(OPS, name)(x.detach(), *args[1:]))


@pytest.mark.parametrize('name,args', _family_samples())
def test_opcheck_with_grad_scale(name, args):
    # Not test_aot_dispatch_dynamic: eager backward scales the op's gradient
    # output in place to hand it over (the op is private; its callers drop
    # that output), which that check sees as an output that differs. The
    # traced backward is compared below instead.
    torch.library.opcheck(getattr(OPS, f'_{name}_with_grad').default, (*args, 0.25),
                          test_utils=('test_schema', 'test_autograd_registration',
                                      'test_faketensor'))


@pytest.mark.parametrize('name,args', [s for s in _family_samples() if s[1][0].requires_grad])
def test_traced_backward_with_grad_scale_equals_eager(name, args):
    op = getattr(OPS, f'_{name}_with_grad')

    def loss_of(x, grad_scale):
        return op(x, *args[1:], grad_scale)[0].sum() * 0.7

    grads = []
    for fn in (loss_of, torch.compile(loss_of, backend='aot_eager', fullgraph=True)):
        x = args[0].detach().clone().requires_grad_(True)
        fn(x, 0.25).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize('name,args', _family_samples())
def test_fused_gradient_folds_grad_scale(name, args):
    x = args[0].detach()
    loss, unit_grad = getattr(OPS, f'_{name}_with_grad')(x, *args[1:])
    scaled_loss, scaled_grad = getattr(OPS, f'_{name}_with_grad')(x, *args[1:], 0.25)
    # The scale multiplies the gradient only, before its one rounding.
    assert torch.equal(scaled_loss, loss)
    rtol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(x.dtype, 1e-6)
    torch.testing.assert_close(scaled_grad, unit_grad * 0.25, rtol=rtol, atol=1e-7)
    assert not torch.equal(scaled_grad, unit_grad)


# Each member's zero-target form (the CPU kernel's path for a vector whose
# targets are all 0) against its general form: the same element, with target
# 0 both times, once in an all-zero vector and once beside a nonzero target.
ZERO_TARGET_MEMBERS = {
    'focal_soft': lambda x, y: sigmoid_focal_loss(x, y, reduction='none'),
    'focal_soft_no_alpha': lambda x, y: sigmoid_focal_loss(x, y, gamma=1.5, alpha=None,
                                                           reduction='none'),
    'qfl_soft': lambda x, y: quality_focal_loss(x, y, beta=2.0, reduction='none'),
    'qfl_soft_beta_1.5': lambda x, y: quality_focal_loss(x, y, beta=1.5, reduction='none'),
    'vfl': lambda x, y: varifocal_loss(x, y, reduction='none'),
    'vfl_class_alpha': lambda x, y: varifocal_loss(
        x, y, alpha=torch.linspace(0.1, 0.9, x.size(1), dtype=x.dtype), gamma=0.5,
        reduction='none'),
    'gaussian': lambda x, y: gaussian_focal_loss(x.sigmoid(), y, reduction='none'),
    'gaussian_logits': lambda x, y: gaussian_focal_loss(x, y, logits=True, reduction='none'),
}


@pytest.mark.parametrize('member', sorted(ZERO_TARGET_MEMBERS))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_zero_target_form_gives_the_general_forms_values(member, dtype):
    fn = ZERO_TARGET_MEMBERS[member]
    # 64 classes: four whole vectors of 16 lanes, two of 8, one of 4 (any ISA);
    # logits from -60 to 60, with 0, -0 and the extremes.
    pred = torch.linspace(-60, 60, 500 * 64, dtype=torch.float64).reshape(500, 64)[
        torch.randperm(500, generator=torch.Generator().manual_seed(0))].to(dtype)
    pred[0, :4] = torch.tensor([0.0, -0.0, 1e4, -1e4], dtype=dtype)
    zeros = torch.zeros_like(pred)
    beside = zeros.clone()
    beside[:, 3::4] = 0.5  # a nonzero target in every group of four lanes
    zero_form = _loss_and_grad(lambda x: fn(x, zeros), pred)
    general_form = _loss_and_grad(lambda x: fn(x, beside), pred)
    keep = beside == 0
    if zero_form[0].dim() == 1:  # losses summed per row: compare the gradients only
        zero_form, general_form = zero_form[1:], general_form[1:]
    for ours, theirs in zip(zero_form, general_form):
        tol = dict(rtol=1e-6, atol=0.0) if dtype == torch.float32 else dict(rtol=1e-14, atol=0.0)
        torch.testing.assert_close(ours[keep], theirs[keep], **tol)


@pytest.mark.parametrize('grad_scale', [float('nan'), float('inf'), -float('inf')])
def test_grad_scale_must_be_finite(grad_scale):
    name, args = _family_samples()[0]
    with pytest.raises(ValueError, match='grad_scale must be a finite number'):
        getattr(OPS, f'_{name}_with_grad')(args[0].detach(), *args[1:], grad_scale)


def test_torch_compile_fullgraph_with_parameters_that_change_between_calls():
    torch._dynamo.reset()

    def losses(x, labels, score, soft, beta, alpha, gamma):
        return (quality_focal_loss(x, labels, score, beta=beta)
                + varifocal_loss(x, soft, alpha=alpha, gamma=gamma)
                + gaussian_focal_loss(x, soft, alpha=beta, gamma=gamma, logits=True))

    compiled = torch.compile(losses, fullgraph=True, backend='aot_eager')
    pred, labels = make_inputs(40, 6)
    score, soft = torch.rand(40), torch.rand(40, 6)
    for beta, alpha, gamma in [(2.0, 0.75, 2.0), (1.0, 0.5, 0.5), (3.5, 0.1, 4.0)]:
        x1 = pred.clone().requires_grad_(True)
        x2 = pred.clone().requires_grad_(True)
        eager = losses(x1, labels, score, soft, beta, alpha, gamma)
        out = compiled(x2, labels, score, soft, beta, alpha, gamma)
        torch.testing.assert_close(out, eager)
        eager.backward()
        out.backward()
        torch.testing.assert_close(x2.grad, x1.grad)


@pytest.mark.parametrize('fn', [
    functools.partial(quality_focal_loss, beta=2.0),
    functools.partial(varifocal_loss, alpha=0.75, gamma=2.0),
    functools.partial(gaussian_focal_loss, logits=True),
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_bitwise_identical_across_thread_counts(fn, dtype):
    threads = torch.get_num_threads()
    pred, labels = make_inputs(6007, 80, dtype=dtype)
    target = torch.rand(6007, 80).to(dtype)
    if fn.func is quality_focal_loss:
        args = (labels, torch.rand(6007))
    else:
        args = (target, )
    results = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            x = pred.clone().requires_grad_(True)
            loss = fn(x, *args, reduction='sum')
            loss.backward()
            results.append((loss.detach(), x.grad))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', ['qfl', 'qfl_soft', 'vfl', 'gfl_logits'])
def test_extreme_logits_give_finite_loss_and_gradient(dtype, case):
    pred = torch.tensor([[-1e4, 1e4, 0.0, -30.0, 30.0], [1e4, -1e4, 5.0, -5.0, 0.0]])
    pred = pred.to(dtype).requires_grad_(True)
    soft = torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.0], [0.2, 0.0, 1.0, 0.0, 0.9]]).to(dtype)
    if case == 'qfl':
        loss = quality_focal_loss(pred, torch.tensor([1, 0]), torch.tensor([0.9, 0.1]),
                                  reduction='sum')
    elif case == 'qfl_soft':
        loss = quality_focal_loss(pred, soft, beta=0.5, reduction='sum')
    elif case == 'vfl':
        loss = varifocal_loss(pred, soft, gamma=0.5, reduction='sum')
    else:
        loss = gaussian_focal_loss(pred, soft, logits=True, reduction='sum')
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(pred.grad).all())


@pytest.mark.parametrize('dtype', DTYPES)
def test_gaussian_probabilities_at_zero_and_one_stay_finite(dtype):
    # mmdet computes log(p + 1e-12) in the input dtype: -inf for half precision.
    p = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 1.0]]).to(dtype).requires_grad_(True)
    target = torch.tensor([[1.0, 0.0, 0.3], [1.0, 1.0, 0.0]]).to(dtype)
    loss = gaussian_focal_loss(p, target, reduction='sum')
    loss.backward()
    assert torch.isfinite(loss)
    # The derivative at p = 0 or 1 is about 1e12: finite from bfloat16 up,
    # beyond float16's range (logits=True avoids it).
    if dtype == torch.float16:
        assert not bool(p.grad.isnan().any())
    else:
        assert bool(torch.isfinite(p.grad).all())


def test_empty_batch_gives_zero_and_zero_gradient():
    pred = torch.zeros(0, 5, requires_grad=True)
    loss = (quality_focal_loss(pred, torch.zeros(0, dtype=torch.long), torch.zeros(0))
            + varifocal_loss(pred, torch.zeros(0, 5))
            + gaussian_focal_loss(pred, torch.zeros(0, 5), logits=True))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad.shape == (0, 5)


# ---------------------------------------------------------------------------
# Bad input: a clear error naming the argument.
# ---------------------------------------------------------------------------
def test_quality_focal_label_out_of_range_raises():
    pred, labels, score = _qfl_inputs(6, 3)
    labels[2] = 4  # C + 1: mmdet silently treats it as background
    with pytest.raises(ValueError, match='target holds label 4 at row 2; expected a class index '
                       'or the background label 0..3'):
        quality_focal_loss(pred, labels, score)
    labels[2] = -1
    with pytest.raises(ValueError, match='target holds label -1 at row 2'):
        quality_focal_loss(pred, labels, score)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(score=torch.rand(5)), ValueError, r'score must have shape \(6,\)'),
    (dict(score=None), ValueError, 'class-index targets need score'),
    (dict(score=torch.full((6, ), 1.5)), ValueError, 'score holds 1.5 at row 0'),
    (dict(score=torch.full((6, ), float('nan'))), ValueError, 'score holds nan at row 0'),
    (dict(beta=-1.0), ValueError, 'beta must be a finite number >= 0'),
    (dict(beta=float('inf')), ValueError, 'beta must be a finite number >= 0'),
    (dict(activated=1), TypeError, 'activated must be True or False'),
    (dict(reduction='avg'), ValueError, 'reduction must be one of'),
])
def test_quality_focal_bad_arguments(kwargs, error, message):
    pred, labels, score = _qfl_inputs(6, 3)
    args = dict(score=score.float())
    args.update(kwargs)
    with pytest.raises(error, match=message):
        quality_focal_loss(pred.float(), labels, **args)


BAD_SOFT_TARGETS = [
    (torch.rand(6, 4), ValueError, r'target must have pred\'s shape \(6, 3\)'),
    (torch.zeros(6, 3, dtype=torch.long), TypeError, 'target must be a float tensor'),
    (torch.full((6, 3), 1.25), ValueError, r'target holds 1.25 at \(0, 0\); expected values in '
     r'\[0, 1\]'),
    (torch.full((6, 3), -0.5), ValueError, r'target holds -0.5 at \(0, 0\)'),
]


@pytest.mark.parametrize('target,error,message', BAD_SOFT_TARGETS)
def test_varifocal_rejects_bad_targets(target, error, message):
    with pytest.raises(error, match=message):
        varifocal_loss(torch.randn(6, 3), target)


# Heatmap values outside [0, 1] follow the formula (next test): only the type
# and shape checks apply to the gaussian loss.
@pytest.mark.parametrize('target,error,message', BAD_SOFT_TARGETS[:2])
def test_gaussian_focal_rejects_bad_target_types_and_shapes(target, error, message):
    with pytest.raises(error, match=message):
        gaussian_focal_loss(torch.rand(6, 3), target)


def test_gaussian_focal_follows_the_formula_for_heatmaps_above_one():
    # mmdet's CenterNetUpdateHead fills the heatmap of an image without
    # objects with num_classes; stock mmdet weights those negatives by
    # (1 - g)^gamma, and so does the fused loss.
    gfl = pytest.importorskip('mmdet.models.losses.gaussian_focal_loss')
    p = torch.rand(5, 4, dtype=torch.float64) * 0.98 + 0.01
    target = torch.full((5, 4), 4.0, dtype=torch.float64)
    _assert_same(_loss_and_grad(gaussian_focal_loss, p, target),
                 _loss_and_grad(gfl.gaussian_focal_loss, p, target, None))


def test_soft_target_error_names_the_first_bad_element_and_fused_path_raises_too():
    target = torch.rand(6, 3)
    target[4, 2] = 2.0
    pred = torch.randn(6, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r'target holds 2 at \(4, 2\)'):
        varifocal_loss(pred, target)  # the training kernel (loss and gradient)


def test_quality_focal_soft_target_and_score_rows():
    pred = torch.randn(6, 3)
    with pytest.raises(ValueError, match='a soft \\(N, C\\) target already holds the scores'):
        quality_focal_loss(pred, torch.rand(6, 3), torch.rand(6))
    with pytest.raises(ValueError, match=r'class-index target must have shape \(6,\)'):
        quality_focal_loss(pred, torch.zeros(5, dtype=torch.long), torch.rand(5))


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(alpha=1.5), ValueError, 'alpha must be'),
    (dict(alpha=-0.1), ValueError, 'alpha must be'),
    (dict(alpha=None), TypeError, 'alpha must be a float in'),
    (dict(alpha=[0.5, 0.5]), ValueError, 'per-class alpha must have length C=3'),
    (dict(gamma=-2.0), ValueError, 'gamma must be a finite number >= 0'),
    (dict(iou_weighted='yes'), TypeError, 'iou_weighted must be True or False'),
])
def test_varifocal_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        varifocal_loss(torch.randn(6, 3), torch.rand(6, 3), **kwargs)


@pytest.mark.parametrize('name', ['alpha', 'gamma', 'pos_weight', 'neg_weight'])
def test_gaussian_focal_negative_parameters_raise(name):
    with pytest.raises(ValueError, match=f'{name} must be a finite number >= 0'):
        gaussian_focal_loss(torch.rand(6, 3), torch.rand(6, 3), **{name: -1.0})


def test_bad_weight_shape_names_the_expected_shapes():
    with pytest.raises(ValueError, match=r'weight must have shape \(6,\) or \(6, 3\)'):
        varifocal_loss(torch.randn(6, 3), torch.rand(6, 3), weight=torch.rand(3))


def test_direct_op_calls_are_checked_in_cpp():
    pred = torch.randn(4, 3)
    with pytest.raises(TypeError, match='target must be soft targets'):
        OPS.varifocal_loss(pred, torch.zeros(4, dtype=torch.long), None, None, None, NO_IGNORE,
                           0.75, 2.0, True, False)
    with pytest.raises(ValueError, match='beta must be a finite number >= 0'):
        OPS.quality_focal_loss(pred, torch.rand(4, 3), None, None, None, NO_IGNORE, -1.0, False,
                               False)
    with pytest.raises(ValueError, match='score must have shape'):
        OPS.quality_focal_loss(pred, torch.zeros(4, dtype=torch.long), torch.rand(3), None, None,
                               NO_IGNORE, 2.0, False, False)


def test_probability_inputs_keep_the_derivative_of_torch_binary_cross_entropy():
    # activated QFL follows F.binary_cross_entropy's clamped log and its backward.
    p = torch.tensor([[0.0, 1.0, 0.3]], dtype=torch.float64)
    y = torch.tensor([[0.2, 0.7, 0.3]], dtype=torch.float64)
    ours = _loss_and_grad(quality_focal_loss, p, y, beta=1.0, activated=True, reduction='sum')

    def theirs_fn(x):
        return (F.binary_cross_entropy(x, y, reduction='none') * (y - x).abs()).sum()

    theirs = _loss_and_grad(theirs_fn, p)
    _assert_same(ours, theirs, rtol=1e-8)
