"""Pure trigger callables: image triggers and event-frame / raw-event triggers.

Every trigger is a frozen dataclass registered as a component of kind ``trigger`` (its
fields are its options); calling it on a batch returns a new, triggered batch. Triggers never
change labels: relabelling belongs to the poisoning code. ``build_trigger(name, options)``
makes one from a config. Modules: ``base`` (checks, geometry, registration), ``image``,
``frames`` (writing squares into frames), ``events`` (Sneaky Spikes, thinning), ``flashy``,
``raw_events``, ``dynamic`` (the learned Sneaky Spikes generator), ``optimised`` (BadSNN T_o).
"""

from . import deepfool, dynamic, optimised  # noqa: F401  (modules register their triggers)
from .base import (
    POLARITY_BITS,
    build_trigger,
    check_trigger_options,
    default_trigger_size,
    option_names,
)
from .dynamic import DynamicConfig, DynamicTrigger
from .events import (
    MovingTrigger,
    SmartOptions,
    SmartTrigger,
    StaticTrigger,
    ThinningTrigger,
    moving_trigger,
    smart_trigger,
    static_trigger,
    thinning_trigger,
)
from .flashy import (
    FlashTrigger,
    FramedTrigger,
    StrobingTrigger,
    flash_trigger,
    framed_trigger,
    strobing_trigger,
)
from .image import (
    BadNetTrigger,
    BlendTrigger,
    CleanLabelStamp,
    NoiseTrigger,
    PowerTrigger,
    WaNetTrigger,
    badnet_trigger,
    blend_pattern,
    blend_trigger,
    clean_label_stamp,
    noise_trigger,
    power_trigger,
    wanet_cross,
    wanet_grid,
    wanet_trigger,
)
from .raw_events import flash_events, static_trigger_events

__all__ = [
    "POLARITY_BITS",
    "BadNetTrigger",
    "BlendTrigger",
    "CleanLabelStamp",
    "DynamicConfig",
    "DynamicTrigger",
    "FlashTrigger",
    "FramedTrigger",
    "MovingTrigger",
    "NoiseTrigger",
    "PowerTrigger",
    "SmartOptions",
    "SmartTrigger",
    "StaticTrigger",
    "StrobingTrigger",
    "ThinningTrigger",
    "WaNetTrigger",
    "badnet_trigger",
    "blend_pattern",
    "blend_trigger",
    "build_trigger",
    "check_trigger_options",
    "clean_label_stamp",
    "default_trigger_size",
    "flash_events",
    "flash_trigger",
    "framed_trigger",
    "moving_trigger",
    "noise_trigger",
    "option_names",
    "power_trigger",
    "smart_trigger",
    "static_trigger",
    "static_trigger_events",
    "strobing_trigger",
    "thinning_trigger",
    "wanet_cross",
    "wanet_grid",
    "wanet_trigger",
]
