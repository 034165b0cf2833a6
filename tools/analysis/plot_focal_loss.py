"""Figure 1 of the focal-loss paper: loss against the probability of the true class.

Computed with focal_plugin's own op (a positive example with logit
log(p_t / (1 - p_t)), alpha off, so the curve is (1 - p_t)^gamma * CE(p_t)).

    python tools/analysis/plot_focal_loss.py --out docs/focal_loss_vs_pt.png
"""
import argparse
import math
import os
import os.path as osp
import sys
from typing import Dict, Sequence

import torch

from focal_plugin.ops import sigmoid_focal_loss

DEFAULT_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)


def focal_loss_curves(gammas: Sequence[float], num_points: int = 400) -> Dict[float, tuple]:
    """Returns {gamma: (p_t, loss)} as float64 tensors, computed with the op."""
    p_t = torch.linspace(1e-3, 1.0 - 1e-6, num_points, dtype=torch.float64)
    logits = torch.log(p_t) - torch.log1p(-p_t)  # p_t = sigmoid(logit)
    labels = torch.zeros(num_points, dtype=torch.long)  # class 0 is the true class
    return {
        g: (p_t, sigmoid_focal_loss(logits[:, None], labels, gamma=g, alpha=None,
                                    reduction='none')[:, 0])
        for g in gammas
    }


def plot(curves: Dict[float, tuple], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for gamma, (p_t, loss) in curves.items():
        label = 'CE (γ = 0)' if gamma == 0 else f'FL, γ = {gamma:g}'
        ax.plot(p_t.numpy(), loss.numpy(), label=label, linewidth=1.8)
    ax.axvspan(0.6, 1.0, color='0.92', zorder=0)
    ax.text(0.8, 3.6, 'well-classified\nexamples', ha='center', fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel('probability of ground truth class $p_t$')
    ax.set_ylabel('loss')
    ax.set_title('Focal loss $-(1-p_t)^\\gamma \\log p_t$ (computed with focal_plugin)')
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='docs/focal_loss_vs_pt.png',
                        help='PNG to write. Defaults to docs/focal_loss_vs_pt.png.')
    parser.add_argument('--gammas', type=float, nargs='+', default=list(DEFAULT_GAMMAS),
                        help='Values of gamma. Defaults to 0 0.5 1 2 5.')
    args = parser.parse_args(argv)
    if any(g < 0 for g in args.gammas):
        parser.error(f'--gammas must all be >= 0, got {args.gammas}')
    curves = focal_loss_curves(args.gammas)
    plot(curves, args.out)
    logit = torch.tensor([[math.log(0.9 / 0.1)]], dtype=torch.float64)  # p_t = 0.9
    for gamma in curves:
        at = sigmoid_focal_loss(logit, torch.tensor([0]), gamma=gamma, alpha=None,
                                reduction='sum')
        print(f'gamma={gamma:g}: loss at p_t=0.9 is {at.item():.5f}')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
