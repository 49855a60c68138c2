"""BadNet (Gu et al. 2017): a small white square stamped on poisoned non-target samples, which
are relabelled to the target class (docs/methods.md 2). BadSNN Table 2's first baseline."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.bundle import DatasetInfo
from ..registry import register
from ..triggers.base import NAMED_POSITIONS as POSITIONS
from ..triggers.image import BadNetTrigger
from .base import AttackOutcome, AttackSetup
from .dirty_label import dirty_label_attack


@dataclass(frozen=True)
class BadNetOptions:
    """A `size` x `size` square of `value` at `position` (a named corner, `middle`, `random`
    drawn from the seed, or [row, col])."""

    size: int = 3
    position: str | tuple[int, int] = "bottom_right"
    value: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"badnet size must be >= 1, got {self.size}")
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"badnet value must be in [0, 1], got {self.value}")
        if isinstance(self.position, str):
            if self.position not in POSITIONS:
                raise ValueError(f"badnet position must be one of {list(POSITIONS)} or "
                                 f"[row, col], got {self.position!r}")
        else:
            position = tuple(int(v) for v in self.position)
            if len(position) != 2 or min(position) < 0:
                raise ValueError(f"badnet position [row, col] needs two indices >= 0, got "
                                 f"{list(self.position)}")
            object.__setattr__(self, "position", position)  # YAML gives a list

    def trigger(self, info: DatasetInfo, seed: int = 0) -> BadNetTrigger:
        """The stamp these options describe (the same for every seed)."""
        return BadNetTrigger(self.size, self.position, self.value)


@register("attack", "badnet", options=BadNetOptions)
def badnet(setup: AttackSetup, options: BadNetOptions | None = None) -> AttackOutcome:
    """BadNet: a white square stamped on poisoned samples, relabelled to the target.

    `poison_ratio` of the training split, drawn by seed from non-target classes.
    """
    return dirty_label_attack("badnet", setup, options or BadNetOptions())
