"""Registers the event datasets: the embedded `ndigits` and the tonic-format recordings."""

from __future__ import annotations

from functools import partial

from .event_files import EVENT_DATASETS, list_event_files, verify_event_dataset
from .events import EVENT_LAYOUTS, find_event_dataset, load_event_dataset
from .ndigits import load_ndigits
from .registry import DatasetEntry, register_dataset


def _locate(name: str, root: str) -> None:
    """Both splits of event dataset `name` are listed under `root` (names only)."""
    for split in ("train", "test"):
        list_event_files(name, root, split)


EVENT_OPTIONS = ("T", "split_by", "val_fraction", "seed", "cache_dir")

register_dataset(
    "ndigits",
    DatasetEntry(
        loader=lambda root=None, **options: load_ndigits(**options),
        description="embedded events: the digits as DVS saccade recordings, 2x34x34 frames",
        options=EVENT_OPTIONS + ("limit",),
        num_classes=10,
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
            num_classes=len(EVENT_DATASETS[_name].classes),
            locate=partial(_locate, _name),
            verify=partial(verify_event_dataset, _name),
        ),
    )
