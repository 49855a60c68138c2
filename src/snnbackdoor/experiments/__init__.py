"""Experiment kinds: each module registers one `kind` (config class + runner) and only
orchestrates stages into a run directory; rendering lives in `snnbackdoor.report`."""

from . import badsnn, neuromorphic, rules, scan, table2, train  # noqa: F401  (register the kinds)
