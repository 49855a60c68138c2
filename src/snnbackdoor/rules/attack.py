"""The poisoning step shared by the three rules: a named trigger, one poisoned training split.

Jin et al. poison the data once and hand the same poisoned set to every learning rule, so the
rules differ only in how the SNN is obtained. Triggers come from the attacks' own factories
(one place per trigger): images ``badnet``, ``blend``, ``wanet`` (the registered attacks'
options build their triggers; WaNet here is the fixed warp stamped on the poisoned samples,
without the noise-mode cross samples); event frames ``static``, ``moving``, ``smart``,
``framed``, ``strobing``, ``flash`` (attacks.neuromorphic; ``smart`` is fitted on the clean
training frames).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..attacks.neuromorphic import FRAME_TRIGGERS, build_frame_trigger
from ..attacks.poisoning import PoisonedSplit, poison_split
from ..config import parse_dataclass
from ..data.bundle import DatasetBundle
from ..registry import get

Trigger = Callable[[torch.Tensor], torch.Tensor]

IMAGE_TRIGGERS = ("badnet", "blend", "wanet")
EVENT_TRIGGERS = tuple(FRAME_TRIGGERS)
_WANET_TRAINING_ONLY = ("cross_ratio", "poison_mode")


def make_trigger(name: str, options: dict | None, data: DatasetBundle, seed: int = 0) -> Trigger:
    """Build trigger ``name`` with ``options`` for ``data`` (image or event frames)."""
    options = dict(options or {})
    kind = data.info.kind
    names = IMAGE_TRIGGERS if kind == "image" else EVENT_TRIGGERS
    if name not in names:
        other = EVENT_TRIGGERS if kind == "image" else IMAGE_TRIGGERS
        where = f" ({name!r} is a trigger for {'event' if kind == 'image' else 'image'} data)" \
            if name in other else ""
        raise ValueError(
            f"attack.trigger {name!r} does not apply to {kind} data{where}; choose one of "
            f"{list(names)}"
        )
    if kind == "image":
        ignored = sorted(set(options) & set(_WANET_TRAINING_ONLY))
        if ignored:
            raise ValueError(f"attack.options {ignored} belong to WaNet's own training; the "
                             "rules experiment stamps the fixed warp only")
        attack = get("attack", name)
        return parse_dataclass(attack.options, options, "attack.options").trigger(data.info, seed)
    return build_frame_trigger(name, options, data.train.floats() if name == "smart" else None)


def poison_training(
    data: DatasetBundle, trigger: Trigger, target: int, ratio: float, seed: int
) -> PoisonedSplit:
    """All-to-one poisoning of the training split (non-target samples stamped and relabelled)."""
    if not 0 <= target < data.info.num_classes:
        raise ValueError(f"attack.target {target} is not a class of {data.info.name} "
                         f"(0..{data.info.num_classes - 1})")
    return poison_split(data.train, trigger, target, ratio, seed)
