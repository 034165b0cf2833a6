"""A Runner that can resume and test from its own checkpoints under torch >= 2.6."""
from typing import Callable, List, Tuple, Union

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint import trusted_checkpoint


@RUNNERS.register_module()
class FocalRunner(Runner):
    """mmengine's Runner, trusting the checkpoint the user names.

    ``resume``, ``load_from`` and testing from a checkpoint all go through
    :meth:`load_checkpoint`; the file named there is loaded in full, as
    mmengine did before torch 2.6 made ``weights_only=True`` the default.
    Every other ``torch.load`` keeps torch's default. Select it in a config
    with ``runner_type = 'FocalRunner'`` (mmdet's ``tools/train.py`` and
    ``tools/test.py`` honour it).
    """

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: List[Tuple[str, str]] = [(r'^module.', '')]):
        with trusted_checkpoint(filename):
            return super().load_checkpoint(filename, map_location=map_location,
                                           strict=strict, revise_keys=revise_keys)
