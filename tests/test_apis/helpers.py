"""What the fuse tests compare: a recursive difference of two config values."""
from typing import List, Tuple


def config_diff(a, b, path: tuple = ()) -> List[Tuple[tuple, object, object]]:
    """Every leaf where ``a`` and ``b`` differ, as (path, a's value, b's value).

    Dicts are compared key by key (a missing key is ``'<missing>'``), lists and
    tuples element by element (a different length is a difference of the
    whole sequence); a list and a tuple with the same elements are the same.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        for key in list(a) + [k for k in b if k not in a]:
            diffs += config_diff(a.get(key, '<missing>'), b.get(key, '<missing>'), path + (key, ))
        return diffs
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [(path, a, b)]
        diffs = []
        for index, (x, y) in enumerate(zip(a, b)):
            diffs += config_diff(x, y, path + (index, ))
        return diffs
    return [] if a == b else [(path, a, b)]


def only_loss_types_differ(stock, fused) -> List[str]:
    """The differences of ``fused`` from ``stock`` that are not a loss swap.

    Returns:
        list[str]: Empty when ``fused`` is ``stock`` with each focal-family
        loss type replaced by its twin and every loss swapped.
    """
    from focal_plugin.apis.fuse import FUSED_TWINS, find_focal_losses
    expected = {path + ('type', ): FUSED_TWINS[name] for path, name in find_focal_losses(stock)}
    problems = []
    for path, old, new in config_diff(stock, fused):
        if expected.pop(path, None) != new:
            problems.append(f'{".".join(map(str, path))}: {old!r} -> {new!r}')
    problems += [f'{".".join(map(str, p))}: not swapped' for p in expected]
    return problems


def resolved_child_model(path: str) -> dict:
    """The model of the config at ``path`` as its base's owner would build it.

    mmengine marks a dict inherited through ``mmdet::`` with
    ``_scope_='mmdet'`` (the registry to build it from, which is the scope that
    mmdet's own configs get from ``default_scope``); that mark is removed.
    """
    from mmengine.config import Config
    model = Config.fromfile(path).model.to_dict()
    if model.get('_scope_') == 'mmdet':
        del model['_scope_']
    return model
