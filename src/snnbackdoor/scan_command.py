"""`snnbackdoor scan PATH`: every model-level detector on a model file or a run directory's
final model, a verdict, and `scan.json` plus a figure written next to the model.

The defender's clean subset is 10% of the training split of the dataset (`--data`, else the
run's own dataset), drawn per class by seed, as the scan benchmark draws it, so a verdict
here uses the levels measured on the benchmark's clean models.
"""

from __future__ import annotations

import json
from pathlib import Path

from .api import defender_subset
from .data import load_dataset
from .errors import UserError
from .io import atomic_write_json
from .report.scan import scan_figure
from .scanning import model_of, scan_model

DEFENDER_FRACTION = 0.1


def scan_path(path: str | Path, data: str | None = None, seed: int = 0,
              device: str = "cpu") -> tuple[dict, list[Path]]:
    """Scan the model `path` delivers on the defender's clean subset of `data` (or the
    run's dataset); (scan.json's content, written files)."""
    model, file, config = model_of(path, device)
    dataset = config.get("dataset") or {}
    name = data or dataset.get("name")
    if not name:
        raise UserError(f"{path}: which dataset is the model for? pass --data NAME "
                        "(`snnbackdoor list dataset`)")
    root = dataset.get("root") if name == dataset.get("name") else None
    options = dataset.get("options") or {} if name == dataset.get("name") else {}
    bundle = load_dataset(name, root, **options)
    spec = getattr(model, "spec", None)
    if spec is not None and (spec.num_classes != bundle.info.num_classes or (
            bundle.info.kind == "image" and (spec.in_channels, spec.image_size) != (
                bundle.info.shape[0], bundle.info.shape[-1]))):
        raise UserError(f"{file} is a {spec.num_classes}-class model for {spec.in_channels}x"
                        f"{spec.image_size}x{spec.image_size} inputs, but {name} gives "
                        f"{bundle.info.num_classes} classes of {bundle.info.shape}; pass the "
                        "dataset (and its options) it was trained on")
    subset = defender_subset(bundle.train, DEFENDER_FRACTION, seed).to(device)
    result = scan_model(model, subset, seed=seed, num_classes=bundle.info.num_classes)
    record = {**result.as_dict(), "model": str(file), "dataset": name,
              "defender_samples": len(subset)}
    folder, stem = Path(path) if Path(path).is_dir() else file.parent, (
        "scan" if Path(path).is_dir() else f"{file.stem}_scan")
    written = [atomic_write_json(folder / f"{stem}.json", record),
               scan_figure(record, folder / f"{stem}.png")]
    return record, written


def scan_text(record: dict) -> str:
    """The console table: one line per detector (score, level, flag, suspected target)
    and the verdict."""
    lines = [f"{'detector':18s} {'score':>8s} {'level':>8s} {'flagged':>8s} {'target':>7s}"]
    for name, det in record["detectors"].items():
        lines.append(f"{name:18s} {det['score']:8.3f} {det['threshold']:8.3f} "
                     f"{'yes' if det['flagged'] else 'no':>8s} {det['target']:7d}")
    target = record["target"]
    lines.append(f"verdict: {record['verdict']}"
                 + (f" (suspected target class {target})" if target is not None else ""))
    return "\n".join(lines)


def scan_json(record: dict) -> str:
    """One JSON object with keys verdict, target, detectors (each: score, target, threshold,
    flagged; the full measurements are in scan.json)."""
    detectors = {n: {k: d[k] for k in ("score", "target", "threshold", "flagged")}
                 for n, d in record["detectors"].items()}
    return json.dumps({"verdict": record["verdict"], "target": record["target"],
                       "detectors": detectors})
