"""Experiment kinds beyond `train`: module `snnbackdoor.experiments.<kind>` registers `<kind>`.

`experiment.parse_config` imports the module of a config's `kind` on demand, so each kind
lives in its own file and adding one never edits a shared list.
"""
