"""Figure 4 of the focal-loss paper: where the loss of a trained detector goes.

Runs a trained RetinaNet-style detector (any mmdet AnchorHead subclass:
RetinaHead, FocalRetinaHead, FocalSSDHead, ...) over a dataset split, assigns
every anchor to foreground or background as in training, computes each
anchor's focal loss (summed over classes, alpha off) for several gamma with
focal_plugin's op, and plots, per gamma, the cumulative distribution of the
normalised loss of positive and of negative anchors (anchors sorted from
lowest to highest loss). Prints the share of the total negative loss carried
by the hardest 1% and 10% of negatives.

    python tools/analysis/loss_distribution.py CONFIG CHECKPOINT \
        [--split val] [--max-images 50] [--out docs/loss_distribution.png]
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List

import torch
from mmengine.config import DictAction

from focal_plugin.ops import sigmoid_focal_loss

DEFAULT_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def collect_anchor_logits(runner, dataloader, max_images: int) -> tuple:
    """Classification logits (M, C) and training labels (M,) of every anchor
    that takes part in the loss (label weight > 0), over up to max_images."""
    from mmdet.models.dense_heads import AnchorHead

    model = runner.model
    head = model.bbox_head
    if not isinstance(head, AnchorHead):
        raise TypeError(f'loss_distribution needs an AnchorHead-based bbox_head, got '
                        f'{type(head).__name__}')
    model.eval()
    logits, labels = [], []
    seen = 0
    with torch.no_grad():
        for data in dataloader:
            data = model.data_preprocessor(data, True)  # keeps the ground truth
            inputs, samples = data['inputs'], data['data_samples']
            cls_scores, _ = head(model.extract_feat(inputs))
            metas = [s.metainfo for s in samples]
            gts = [s.gt_instances for s in samples]
            featmap_sizes = [s.shape[-2:] for s in cls_scores]
            anchors, valid = head.get_anchors(featmap_sizes, metas, device=inputs.device)
            targets = head.get_targets(anchors, valid, gts, metas)
            labels_list, weights_list = targets[0], targets[1]
            b = inputs.size(0)
            c = head.cls_out_channels
            scores = torch.cat([s.permute(0, 2, 3, 1).reshape(b, -1, c) for s in cls_scores], 1)
            lab = torch.cat([lb.reshape(b, -1) for lb in labels_list], 1)
            wts = torch.cat([w.reshape(b, -1) for w in weights_list], 1)
            keep = wts > 0
            logits.append(scores[keep].float().cpu())
            labels.append(lab[keep].cpu())
            seen += b
            print(f'\r{seen} images', end='', file=sys.stderr, flush=True)  # progress
            if seen >= max_images:
                break
    print(file=sys.stderr)
    return torch.cat(logits), torch.cat(labels)


def normalized_cdf(loss: torch.Tensor) -> tuple:
    """(fraction of anchors, cumulative normalised loss), anchors sorted by loss."""
    values = loss.double().sort().values
    cumulative = values.cumsum(0)
    total = cumulative[-1] if values.numel() else values.new_tensor(1.0)
    fraction = torch.arange(1, values.numel() + 1, dtype=torch.float64) / max(values.numel(), 1)
    return fraction, cumulative / total.clamp_min(1e-300)


def hardest_share(loss: torch.Tensor, fraction: float) -> float:
    """Share of the total loss carried by the hardest ``fraction`` of anchors."""
    if loss.numel() == 0:
        return float('nan')
    k = max(1, int(round(fraction * loss.numel())))
    top = loss.double().topk(k).values.sum()
    return (top / loss.double().sum().clamp_min(1e-300)).item()


def analyse(logits: torch.Tensor, labels: torch.Tensor, gammas) -> Dict[str, dict]:
    num_classes = logits.size(1)
    positive = labels < num_classes
    results = {}
    for gamma in gammas:
        per_anchor = sigmoid_focal_loss(logits, labels, gamma=gamma, alpha=None,
                                        reduction='none').sum(1)
        results[f'{gamma:g}'] = dict(
            positive=per_anchor[positive], negative=per_anchor[~positive],
            negative_hardest_1pct=hardest_share(per_anchor[~positive], 0.01),
            negative_hardest_10pct=hardest_share(per_anchor[~positive], 0.10),
            positive_hardest_10pct=hardest_share(per_anchor[positive], 0.10))
    return results


def plot(results: Dict[str, dict], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for ax, kind in zip(axes, ('positive', 'negative')):
        for gamma, res in results.items():
            frac, cdf = normalized_cdf(res[kind])
            ax.plot(frac.numpy(), cdf.numpy(), label=f'γ = {gamma}', linewidth=1.6)
        n = next(iter(results.values()))[kind].numel()
        ax.set_title(f'{kind} anchors (n = {n})')
        ax.set_xlabel(f'fraction of {"foreground" if kind == "positive" else "background"} '
                      'examples')
        ax.set_ylabel('cumulative normalized loss')
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc='upper left')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def build_runner(config: str, checkpoint: str, split: str, work_dir: str, cfg_options=None):
    from focal_plugin.apis.runner_setup import build_runner as build, load_config

    cfg = load_config(config, cfg_options, 'none', work_dir)
    cfg.load_from = checkpoint
    loader_key = f'{split}_dataloader'
    if cfg.get(loader_key) is None:
        raise ValueError(f'--split {split}: the config has no {loader_key}')
    # Anchors must be assigned exactly as in training, so the split goes through
    # the training pipeline without its random transforms (test pipelines may
    # load the boxes after Resize, in original-image coordinates, for metrics).
    train_set, split_set = cfg.train_dataloader.dataset, cfg[loader_key].dataset
    while 'pipeline' not in train_set:
        train_set = train_set.dataset
    while 'pipeline' not in split_set:
        split_set = split_set.dataset
    split_set.pipeline = [t for t in train_set.pipeline if not t['type'].startswith('Random')]
    cfg.test_dataloader = cfg[loader_key]
    runner = build(cfg)
    runner.load_or_resume()
    return runner, runner.build_dataloader(cfg[loader_key])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config of the trained detector')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('--split', default='val', choices=['train', 'val', 'test'],
                        help='dataset split to run over. Defaults to val.')
    parser.add_argument('--max-images', type=int, default=50,
                        help='images to use. Defaults to 50.')
    parser.add_argument('--gammas', type=float, nargs='+', default=list(DEFAULT_GAMMAS),
                        help='gammas of the curves. Defaults to 0 0.5 1 2.')
    parser.add_argument('--out', default='docs/loss_distribution.png',
                        help='PNG to write. Defaults to docs/loss_distribution.png.')
    parser.add_argument('--json', help='also write the printed numbers to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    parser.add_argument('--work-dir', default=None,
                        help='where the runner may log. Defaults to a temporary folder.')
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error(f'--max-images must be >= 1, got {args.max_images}')
    if any(g < 0 for g in args.gammas):
        parser.error(f'--gammas must be >= 0, got {args.gammas}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint {args.checkpoint!r} does not exist')

    import tempfile
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='focal_loss_distribution_')
    runner, loader = build_runner(args.config, args.checkpoint, args.split, work_dir,
                                  args.cfg_options)
    logits, labels = collect_anchor_logits(runner, loader, args.max_images)
    results = analyse(logits, labels, args.gammas)
    title = (f'{osp.basename(args.config)}, {args.split} split, '
             f'{min(args.max_images, len(loader.dataset))} images')
    plot(results, args.out, title)
    summary: List[dict] = []
    for gamma, res in results.items():
        row = dict(gamma=float(gamma), positives=res['positive'].numel(),
                   negatives=res['negative'].numel(),
                   negative_loss_share_hardest_1pct=res['negative_hardest_1pct'],
                   negative_loss_share_hardest_10pct=res['negative_hardest_10pct'],
                   positive_loss_share_hardest_10pct=res['positive_hardest_10pct'])
        summary.append(row)
        print(f"gamma={gamma}: hardest 1% of {row['negatives']} negatives carry "
              f"{row['negative_loss_share_hardest_1pct']:.1%} of the negative loss, hardest "
              f"10% carry {row['negative_loss_share_hardest_10pct']:.1%}; hardest 10% of "
              f"{row['positives']} positives carry "
              f"{row['positive_loss_share_hardest_10pct']:.1%} of the positive loss")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
