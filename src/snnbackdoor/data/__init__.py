"""Datasets as DatasetBundles: the embedded digits, event data and the standard formats."""

from . import event_registry  # noqa: F401  (registers the event datasets)
from .bundle import DatasetBundle, DatasetInfo, Split, stratified_split
from .registry import load_dataset

__all__ = ["DatasetBundle", "DatasetInfo", "Split", "load_dataset", "stratified_split"]
