"""Registers the event datasets: the embedded `ndigits` and the tonic-format recordings."""

from __future__ import annotations

from functools import partial

from .events import EVENT_LAYOUTS, find_event_dataset, load_event_dataset
from .ndigits import load_ndigits
from .registry import DatasetEntry, register_dataset

EVENT_OPTIONS = ("T", "split_by", "val_fraction", "seed", "cache_dir")

register_dataset(
    "ndigits",
    DatasetEntry(
        loader=lambda root=None, **options: load_ndigits(**options),
        description="embedded events: the digits as DVS saccade recordings, 2x34x34 frames",
        options=EVENT_OPTIONS + ("limit",),
    ),
)
for _name, _text in (
    ("nmnist", "N-MNIST recordings (tonic layout), 2x34x34 frames"),
    ("dvsgesture", "DVS128 Gesture (tonic's preprocessed .npy layout), 2x128x128 frames"),
    ("cifar10dvs", "CIFAR10-DVS .aedat recordings, 2x128x128 frames, fixed 90/10 split"),
):
    register_dataset(
        _name,
        DatasetEntry(
            loader=partial(load_event_dataset, _name),
            description=_text,
            needs_root=True,
            layout=EVENT_LAYOUTS[_name],
            find=partial(find_event_dataset, _name),
            options=EVENT_OPTIONS,
        ),
    )
