"""focal_plugin.ops needs only torch: no mmengine, mmcv, mmdet or OpenCV.

A CUDA machine that only runs the op tests (``tools/gpu_check.sh``) has torch,
pytest and hypothesis and nothing else; so do users who only want the op.
"""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKED = ('mmengine', 'mmcv', 'mmdet', 'cv2')


def _run_blocked(body: str) -> subprocess.CompletedProcess:
    """Runs ``body`` in a fresh interpreter where BLOCKED cannot be imported."""
    script = textwrap.dedent(f"""
        import sys

        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ImportError(f'{{name}} is blocked by the test')
                return None

        sys.meta_path.insert(0, Blocker())
    """) + textwrap.dedent(body) + textwrap.dedent("""
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
        assert not loaded, loaded
        print('OK')
    """)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH')) if p)
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_op_imports_and_runs_without_openmmlab_and_opencv():
    proc = _run_blocked("""
        import torch
        import focal_plugin.ops as ops

        pred = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, 1, 2, 3, 1, -1])
        loss = ops.sigmoid_focal_loss(pred, labels, alpha=[0.2, 0.3, 0.4])
        expected = ops.reference.sigmoid_focal_loss(pred, labels, alpha=[0.2, 0.3, 0.4])
        torch.testing.assert_close(loss, expected)
        loss.backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all()
        soft = ops.softmax_focal_loss(pred, labels.clamp(max=2), reduction='none')
        assert soft.shape == (6, )

        import focal_plugin
        assert not focal_plugin.HAS_MMENGINE and not focal_plugin.HAS_MMDET
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith('OK')


def test_runner_without_mmengine_says_what_to_install():
    proc = _run_blocked("""
        import focal_plugin
        try:
            from focal_plugin import FocalRunner
        except ImportError as err:
            assert 'needs mmengine>=' in str(err), err
        else:
            raise AssertionError('FocalRunner imported without mmengine')
        try:
            focal_plugin.no_such_name
        except AttributeError:
            pass
        else:
            raise AssertionError('an unknown attribute did not raise AttributeError')
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith('OK')
