"""FusedFocalLoss: registry, mmdet's FocalLoss contract and numbers, extras, bad config."""
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, Registry

from focal_plugin.models.losses import FusedFocalLoss
from focal_plugin.ops import reference


def rel_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs() / expected.abs().clamp_min(1e-30)).max().item()


def make_inputs(n=400, c=20, scale=3.0):
    pred = torch.randn(n, c) * scale
    labels = torch.randint(0, c + 1, (n, ))  # c: background
    return pred, labels


def grad_of(loss_module, pred, *args, **kwargs):
    x = pred.detach().clone().requires_grad_(True)
    loss = loss_module(x, *args, **kwargs)
    (grad, ) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------
def test_registered_in_mmengine_root_registry():
    loss = MODELS.build(dict(type='FusedFocalLoss', gamma=1.5))
    assert isinstance(loss, FusedFocalLoss) and loss.gamma == 1.5


def test_found_through_a_downstream_projects_registry_parent_chain():
    # What mmyolo, mmrotate, mmseg, ... do: a scoped child of mmengine's MODELS.
    child = Registry('model', parent=MODELS, scope='some_openmmlab_project')
    assert isinstance(child.build(dict(type='FusedFocalLoss')), FusedFocalLoss)


def test_found_by_mmdet_registry():
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS as MMDET_MODELS
    assert isinstance(MMDET_MODELS.build(dict(type='FusedFocalLoss')), FusedFocalLoss)


def test_builds_and_runs_without_mmdet_and_mmcv():
    script = textwrap.dedent("""
        import sys

        class BlockOpenMMLabCV:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('mmdet', 'mmcv'):
                    raise ImportError(f'{name} is blocked by the test')
                return None

        sys.meta_path.insert(0, BlockOpenMMLabCV())
        import torch
        import focal_plugin
        from mmengine.registry import MODELS
        from focal_plugin.ops import reference

        loss = MODELS.build(dict(type='FusedFocalLoss', alpha=[0.2, 0.3, 0.4], loss_weight=2.0))
        pred = torch.randn(6, 3)
        labels = torch.tensor([0, 1, 2, 3, 1, 0])
        expected = 2.0 * reference.sigmoid_focal_loss(pred, labels, alpha=[0.2, 0.3, 0.4])
        torch.testing.assert_close(loss(pred, labels), expected)
        assert not focal_plugin.HAS_MMDET
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmcv'))
        assert not loaded, loaded
        print('OK')
    """)
    proc = subprocess.run([sys.executable, '-c', script],
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('OK')


# ----------------------------------------------------------------------------
# Equal to mmdet's FocalLoss (its CPU path)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('weight_kind', [None, 'row', 'row_n1', 'element', 'flat_element'])
@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('sum', None), ('mean', 37.0),
                                                  ('mean', 'tensor')])
@pytest.mark.parametrize('target_kind', ['labels', 'one_hot'])
def test_matches_mmdet_focal_loss(weight_kind, reduction, avg_factor, target_kind):
    mmdet_losses = pytest.importorskip('mmdet.models.losses')
    n, c = 400, 20
    pred, labels = make_inputs(n, c)
    weight = {
        None: None,
        'row': torch.rand(n),
        'row_n1': torch.rand(n, 1),
        'element': torch.rand(n, c),
        'flat_element': torch.rand(n * c),  # FSAF's per-anchor-per-class weight
    }[weight_kind]
    target = labels if target_kind == 'labels' else F.one_hot(labels, c + 1)[:, :c].float()
    if avg_factor == 'tensor':
        avg_factor = torch.tensor(12.5)
    kwargs = dict(gamma=2.0, alpha=0.25, loss_weight=2.0)
    ours, our_grad = grad_of(
        FusedFocalLoss(**kwargs),
        pred,
        target,
        weight,
        avg_factor=avg_factor,
        reduction_override=reduction)
    theirs, their_grad = grad_of(
        mmdet_losses.FocalLoss(**kwargs),
        pred,
        target,
        weight,
        avg_factor=avg_factor,
        reduction_override=reduction)
    assert ours.dim() == 0
    assert rel_error(ours, theirs) <= 1e-5
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize('scale', [1.0, 3.0])
def test_unreduced_matches_mmdet_formula(scale):
    """reduction='none', element by element.

    mmdet's float32 path computes 1 - sigmoid(x) by subtraction, which loses
    up to ~10% of a confident positive's loss at |x| ~ 9 (and ~2e-5 even for
    randn logits); the fused op does not. So the elements are compared with
    mmdet's formula evaluated in float64, the reduced values (above) in float32.
    """
    mmdet_losses = pytest.importorskip('mmdet.models.losses')
    pred, labels = make_inputs(scale=scale)
    weight = torch.rand(pred.size(0))
    ours = FusedFocalLoss(reduction='none')(pred, labels, weight)
    theirs = mmdet_losses.FocalLoss(reduction='none')(pred.double(), labels, weight.double())
    assert ours.shape == pred.shape and ours.dtype == torch.float32
    assert rel_error(ours, theirs) <= 1e-5


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('target_kind', ['labels', 'one_hot'])
def test_activated_matches_mmdet_py_focal_loss_with_prob(reduction, target_kind):
    mmdet_losses = pytest.importorskip('mmdet.models.losses')
    pred, labels = make_inputs(scale=1.0)
    prob = pred.sigmoid()  # away from 0 and 1
    c = pred.size(1)
    target = labels if target_kind == 'labels' else F.one_hot(labels, c + 1)[:, :c].float()
    weight = torch.rand(pred.size(0))
    kwargs = dict(activated=True, reduction=reduction, alpha=0.3, gamma=1.5)
    ours, our_grad = grad_of(FusedFocalLoss(**kwargs), prob, target, weight)
    theirs, their_grad = grad_of(mmdet_losses.FocalLoss(**kwargs), prob, target, weight)
    assert rel_error(ours, theirs) <= 1e-5
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-7)


def test_activated_saturated_probabilities_stay_finite():
    prob = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss = FusedFocalLoss(activated=True, reduction='sum')(prob, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0  # both rows are maximally wrong
    assert torch.isfinite(prob.grad).all()


# ----------------------------------------------------------------------------
# The contract: reduction, loss_weight, avg_factor
# ----------------------------------------------------------------------------
def test_reduction_override_and_loss_weight():
    pred, labels = make_inputs()
    plain = FusedFocalLoss(reduction='sum')
    weighted = FusedFocalLoss(reduction='sum', loss_weight=3.0)
    elements = plain(pred, labels, reduction_override='none')
    torch.testing.assert_close(plain(pred, labels), elements.sum(), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        plain(pred, labels, reduction_override='mean'), elements.mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(weighted(pred, labels), 3.0 * plain(pred, labels))
    torch.testing.assert_close(
        plain(pred, labels, avg_factor=8.0, reduction_override='mean'),
        elements.sum() / (8.0 + torch.finfo(torch.float32).eps),
        rtol=1e-5,
        atol=0)


@pytest.mark.parametrize('bad', ['avg', 'MEAN', 1])
def test_bad_reduction_override(bad):
    pred, labels = make_inputs()
    with pytest.raises(ValueError, match=r"reduction_override must be one of \(None, 'none'"):
        FusedFocalLoss()(pred, labels, reduction_override=bad)


def test_avg_factor_with_sum_is_refused_as_in_mmdet():
    pred, labels = make_inputs()
    with pytest.raises(ValueError, match='avg_factor can not be used with reduction="sum"'):
        FusedFocalLoss(reduction='sum')(pred, labels, avg_factor=4.0)


# ----------------------------------------------------------------------------
# Extras over mmdet: per-class alpha, ignore_index, softmax, any shape
# ----------------------------------------------------------------------------
def test_per_class_alpha_matches_reference_and_follows_the_module():
    pred, labels = make_inputs(c=5)
    alpha = [0.1, 0.3, 0.5, 0.7, 0.9]
    loss = FusedFocalLoss(alpha=alpha, reduction='none')
    expected = reference.sigmoid_focal_loss(pred.double(), labels, alpha=alpha, reduction='none')
    torch.testing.assert_close(loss(pred, labels).double(), expected, rtol=1e-5, atol=1e-10)
    # Constant per-class alpha is the scalar alpha.
    torch.testing.assert_close(
        FusedFocalLoss(alpha=torch.full((5, ), 0.25))(pred, labels),
        FusedFocalLoss()(pred, labels))
    # The alpha buffer is not state: checkpoints stay those of mmdet's FocalLoss.
    assert loss.state_dict() == {}


def test_ignore_index_drops_rows():
    pred, labels = make_inputs()
    labels[::3] = 255
    loss = FusedFocalLoss(ignore_index=255, reduction='sum')
    keep = labels != 255
    torch.testing.assert_close(
        loss(pred, labels), loss(pred[keep], labels[keep]), rtol=1e-5, atol=0)
    assert (loss(pred, labels, reduction_override='none')[~keep] == 0).all()


def test_softmax_focal_loss():
    n, k = 300, 6
    pred = torch.randn(n, k) * 2
    labels = torch.randint(0, k, (n, ))
    weight = torch.rand(n)
    loss = FusedFocalLoss(use_sigmoid=False, gamma=2.0, alpha=None, reduction='none')
    out = loss(pred, labels, weight)
    assert out.shape == (n, )
    # -(1 - p_t)^gamma log p_t, written out from the paper.
    log_p_t = F.log_softmax(pred.double(), 1).gather(1, labels[:, None])[:, 0]
    expected = -(1 - log_p_t.exp())**2 * log_p_t * weight.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        loss(pred, labels, weight, reduction_override='mean').double(),
        expected.mean(),
        rtol=1e-5,
        atol=0)
    with pytest.raises(TypeError, match='integer class indices'):
        loss(pred, torch.rand(n, k))


def test_same_shape_pred_of_any_rank_is_elementwise_like_yolov3_uses_it():
    mmdet_losses = pytest.importorskip('mmdet.models.losses')
    b, a, c = 2, 50, 7
    loss = FusedFocalLoss()
    # loss_cls in YOLOv3Head: one-hot (smoothed) targets, a (B, A, 1) positive mask.
    pred = torch.randn(b, a, c) * 2
    target = torch.rand(b, a, c)
    weight = (torch.rand(b, a, 1) > 0.5).float()
    flat = mmdet_losses.FocalLoss()(
        pred.reshape(-1, c), target.reshape(-1, c), weight.reshape(-1), avg_factor=9.0)
    assert rel_error(loss(pred, target, weight, avg_factor=9.0), flat) <= 1e-5
    none = loss(pred, target, weight, reduction_override='none')
    assert none.shape == pred.shape
    torch.testing.assert_close(
        none.reshape(-1, c),
        loss(
            pred.reshape(-1, c),
            target.reshape(-1, c),
            weight.reshape(-1),
            reduction_override='none'))
    # loss_conf in YOLOv3Head: 1-D (or (B, A)) objectness with same-shape targets.
    conf, conf_target, conf_weight = torch.randn(a), (torch.rand(a) > 0.8).float(), torch.rand(a)
    theirs = mmdet_losses.FocalLoss()(conf, conf_target, conf_weight)
    assert rel_error(loss(conf, conf_target, conf_weight), theirs) <= 1e-5
    assert loss(conf, conf_target, reduction_override='none').shape == (a, )
    # Class indices over a leading batch axis: class axis last.
    labels = torch.randint(0, c + 1, (b, a))
    torch.testing.assert_close(
        loss(pred, labels, reduction_override='none'),
        loss(pred.reshape(-1, c), labels.reshape(-1), reduction_override='none').reshape(b, a, c))


def test_integer_one_hot_target_is_taken_as_binary_targets():
    pred, labels = make_inputs(c=4)
    one_hot = F.one_hot(labels, 5)[:, :4]
    loss = FusedFocalLoss(reduction='none')
    torch.testing.assert_close(loss(pred, one_hot), loss(pred, labels))


def test_mismatched_target_and_weight_shapes():
    pred, labels = make_inputs(n=10, c=4)
    with pytest.raises(ValueError, match=r'target must have pred\'s shape \(10, 4\)'):
        FusedFocalLoss()(pred, labels[:5])
    with pytest.raises(ValueError, match='weight of shape'):
        FusedFocalLoss()(pred, labels, torch.rand(3, 4))


# ----------------------------------------------------------------------------
# Bad configuration: errors at build time that name the argument and the accepted values
# ----------------------------------------------------------------------------
def test_unknown_keyword_names_it_and_the_accepted_arguments():
    with pytest.raises(TypeError) as info:
        MODELS.build(dict(type='FusedFocalLoss', gama=2.0))
    message = str(info.value)
    assert "'gama'" in message
    for name in ('use_sigmoid', 'gamma', 'alpha', 'reduction', 'loss_weight', 'activated',
                 'ignore_index'):
        assert name in message


@pytest.mark.parametrize('kwargs,error,pattern', [
    (dict(gamma=-1.0), ValueError, r'gamma must be a finite number >= 0, got -1\.0'),
    (dict(gamma=math.nan), ValueError, 'gamma must be a finite number >= 0'),
    (dict(gamma='2'), TypeError, 'gamma must be a real number >= 0'),
    (dict(alpha=1.5), ValueError, r'alpha must be None, a float in \[0, 1\] or a 1-D'),
    (dict(alpha=-0.1), ValueError, r'alpha must be None, a float in \[0, 1\]'),
    (dict(alpha=[0.2, 1.2]), ValueError, r'alpha must be .*per-class floats in \[0, 1\], '
     r'got \[0\.2, 1\.2\]'),
    (dict(alpha=[]), ValueError, 'alpha must be .* got a sequence of shape'),
    (dict(alpha=[[0.2, 0.3]]), TypeError, r'alpha must be .* got \[\[0\.2, 0\.3\]\]'),
    (dict(alpha=torch.full((2, 2), 0.25)), ValueError, r'alpha must be .* shape \(2, 2\)'),
    (dict(alpha='0.25'), TypeError, 'alpha must be None, a float'),
    (dict(alpha=True), TypeError, 'alpha must be None, a float'),
    (dict(use_sigmoid=False,
          activated=True), ValueError, 'activated=True .* needs use_sigmoid=True'),
    (dict(use_sigmoid='yes'), TypeError, 'use_sigmoid must be True or False'),
    (dict(activated=1), TypeError, 'activated must be True or False'),
    (dict(reduction='avg'), ValueError,
     r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
    (dict(loss_weight=-1.0), ValueError, 'loss_weight must be a finite number >= 0'),
    (dict(loss_weight=math.inf), ValueError, 'loss_weight must be a finite number >= 0'),
    (dict(loss_weight='1'), TypeError, 'loss_weight must be a real number >= 0'),
    (dict(ignore_index=1.5), TypeError, 'ignore_index must be an int'),
])
def test_bad_configuration_fails_at_build(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        MODELS.build(dict(type='FusedFocalLoss', **kwargs))


def test_per_class_alpha_of_wrong_length_names_alpha_and_c_at_forward():
    loss = FusedFocalLoss(alpha=[0.25, 0.25, 0.25])
    pred, labels = make_inputs(c=4)
    with pytest.raises(ValueError, match=r'alpha must have length C=4, got shape \(3,\)'):
        loss(pred, labels)


def test_softmax_needs_a_class_axis():
    with pytest.raises(ValueError, match=r'use_sigmoid=False needs pred with a class axis'):
        FusedFocalLoss(use_sigmoid=False)(torch.randn(5), torch.zeros(5, dtype=torch.long))
