"""BadSNN (Miah, Vu, Bi): a backdoor planted in the spiking neurons' hyperparameters.

Dual-spike learning (Eq. 2): no trigger and no relabelling. A seeded share P of the target
class (D_t^p) is learned under both the nominal config S_n and a malicious config S_t, so
"malicious" spike patterns become evidence for the target class. At inference the model is
deployed at an attack config S_a between the two, where a trigger that shifts the spike
count (T_p, T_o, T_s) pushes inputs onto the target.

Each stage is a plain function of a model object (a registered model or a user's own
SpikingClassifier) and a DatasetBundle: no run directory, no config file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data.augment import dataset_augmentation
from ...data.bundle import DatasetBundle, Split
from ...metrics import attack_success_rate
from ...neurons import NeuronConfig, get_neuron_params, is_lif, spiking_nodes, use_config
from ...training import TrainConfig, evaluate, predict, train
from ..poisoning import choose_poison_index, triggered_non_target
from .options import BadSNNOptions


def choose_poisoned_target_samples(y: torch.Tensor, target: int, ratio: float, seed: int):
    """D_t^p: round(ratio * |D_t|) target-class indices, chosen once by seed."""
    y = y.cpu()
    target_count = int((y == target).sum())
    if target_count == 0:
        raise ValueError(f"the training split has no sample of target class {target}")
    share = ratio * target_count / len(y)
    return choose_poison_index(y, target, share, seed, from_target=True)


def tau_is_setting(model: nn.Module) -> bool:
    """Whether tau is a neuron setting of this model (LIF); PLIF learns it, IF has none."""
    return any(is_lif(node) for _, node in spiking_nodes(model))


def nominal_config(model: nn.Module) -> NeuronConfig:
    """The model's current (shared) neuron config S_n; tau only where it is a setting."""
    values = {(p["v_threshold"], p["tau"]) for p in get_neuron_params(model).values()}
    thresholds = {v for v, _ in values}
    if len(thresholds) != 1:
        raise ValueError(f"BadSNN sets one V_thr on every spiking node; this model's nodes "
                         f"differ ({sorted(thresholds)}): give them one nominal threshold")
    taus = {t for _, t in values}
    tau = taus.pop() if tau_is_setting(model) and len(taus) == 1 else None
    return NeuronConfig(thresholds.pop(), tau)


def _bn_eval(model: nn.Module):
    """BatchNorm layers switched to eval (running stats, no update); returns a restorer."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    for m in norms:
        m.eval()

    def restore() -> None:
        for m, mode in zip(norms, modes):
            m.train(mode)

    return restore


def dual_spike_loss(poisoned_mask: torch.Tensor, malicious: NeuronConfig,
                    malicious_weight: float = 1.0):
    """Eq. 2 as a trainer `loss_fn`: CE of the batch under S_n plus `malicious_weight` x CE
    of its D_t^p members under S_t (same labels), one backward of the sum (weight 1: Eq. 2).

    Normalised by the batch size so the malicious term has Eq. 2's weight relative to the
    nominal one. The malicious forward runs BatchNorm on its running statistics (no update),
    so the nominal statistics the model is deployed with are not polluted by a few samples
    seen under S_t.
    """

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        members = poisoned_mask[index]
        if members.any():
            restore = _bn_eval(model)
            try:
                with use_config(model, malicious):
                    loss = loss + malicious_weight * F.cross_entropy(
                        model(x[members]), y[members], reduction="sum")
            finally:
                restore()
        return loss / len(y)

    return loss_fn


def train_dual_spike(model: nn.Module, data: DatasetBundle, recipe: TrainConfig,
                     malicious: NeuronConfig, target: int, target_class_ratio: float,
                     seed: int, malicious_weight: float = 1.0) -> tuple[nn.Module, dict]:
    """Train `model` in place with dual-spike learning (Eq. 2); (model, stage info).

    D_t^p is drawn by `seed`; the recipe's own seed drives batches (as for a clean model).
    Info: poisoned and target counts, base CA on test and val (at S_n), time, history.
    """
    poisoned = choose_poisoned_target_samples(data.train.y, target, target_class_ratio, seed)
    device = data.train.y.device
    mask = torch.zeros(len(data.train), dtype=torch.bool, device=device)
    mask[poisoned.to(device)] = True
    augment = dataset_augmentation(data.info, recipe.augment)
    result = train(model, data.train, recipe, data.val, augment=augment,
                   loss_fn=dual_spike_loss(mask, malicious, malicious_weight), description="BadSNN")
    info = {
        "poisoned_count": len(poisoned),
        "target_count": int((data.train.y == target).sum()),
        "base_ca": evaluate(model, data.test),
        "val_base_ca": evaluate(model, data.val),
        "train_seconds": round(result.seconds, 3),
        "history": result.history,
    }
    return model, info


def auto_malicious_threshold(
    clean_model: nn.Module, val: Split, grid: list[float], level: float, tau: float | None
) -> tuple[float, list[dict]]:
    """The smallest V_thr^t on the grid at which the CLEAN model's val accuracy < level."""
    curve = []
    for v in sorted(grid):
        accuracy = evaluate(clean_model, val, neuron_config=NeuronConfig(v, tau))
        curve.append({"v_threshold": v, "val_accuracy": accuracy})
        if accuracy < level:
            return v, curve
    raise ValueError(
        f"the clean model's val accuracy never fell below {level:.3f} on V_thr {grid}; "
        "extend badsnn.auto_grid or set badsnn.v_threshold_t"
    )


def choose_malicious_config(clean_model: nn.Module | None, data: DatasetBundle,
                            options: BadSNNOptions, tau_setting: bool = True) -> dict:
    """S_t as a record: the given V_thr^t, or the automatic one on the clean model's val
    curve. `tau_setting` False (PLIF, IF): the malicious tau is not applied."""
    if options.v_threshold_t is not None:
        return {"v_threshold_t": options.v_threshold_t, "tau_t": options.tau_t, "curve": []}
    if clean_model is None:
        raise ValueError("badsnn.v_threshold_t is null (automatic), which needs the clean "
                         "model; give one or set badsnn.v_threshold_t")
    level = options.auto_level or 2.0 / data.info.num_classes
    tau = options.tau_t if tau_setting else None
    v, curve = auto_malicious_threshold(clean_model, data.val, options.auto_grid, level, tau)
    return {"v_threshold_t": v, "tau_t": options.tau_t, "curve": curve, "level": level}


def attack_grid(options: BadSNNOptions, tau_setting: bool = True) -> list[NeuronConfig]:
    """The attack configs S_a to search: every (tau^a, V_thr^a), tau dropped where the
    model has no tau to set."""
    return [NeuronConfig(v, t if tau_setting else None)
            for t in options.taus_a for v in options.v_thresholds_a]


def asr_on_triggered(model, triggered: Split, target: int,
                     config: NeuronConfig | None) -> float:
    """ASR on already-triggered non-target samples (labels kept), at a neuron config."""
    pred = predict(model, triggered.x, neuron_config=config).cpu()
    return attack_success_rate(pred, triggered.y.cpu(), target)


def asr_at(model, split: Split, trigger, target: int, config: NeuronConfig | None) -> float:
    """ASR of `trigger` on the non-target samples of `split`, at a neuron config."""
    return asr_on_triggered(model, triggered_non_target(split, trigger, target), target, config)


def attack_config_grid(model, data: DatasetBundle, triggers: dict, target: int,
                       configs: list[NeuronConfig], progress: bool = True,
                       with_ca: bool = True, with_val: bool = True) -> list[dict]:
    """CA and ASR per trigger (keyed by metric, e.g. asr_p) at every attack config, on val
    (`val_*`, for selection; `with_val` False leaves them out) and test (for the report).

    Triggers do not depend on the neuron config: each split is triggered once.
    """
    from tqdm.auto import tqdm

    splits = {"": data.test, **({"val_": data.val} if with_val else {})}
    triggered = {(key, prefix): triggered_non_target(split, trigger, target)
                 for key, trigger in triggers.items() for prefix, split in splits.items()}
    rows = []
    for config in tqdm(configs, desc="attack grid", leave=False, disable=not progress):
        row = {"v_threshold_a": config.v_threshold, "tau_a": config.tau}
        for prefix, split in splits.items():
            if with_ca:
                row[f"{prefix}ca"] = evaluate(model, split, neuron_config=config)
            for key in triggers:
                row[f"{prefix}{key}"] = asr_on_triggered(model, triggered[key, prefix], target,
                                                         config)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class AttackChoice:
    """The attack config Eq. 8 picked, and how: `within_tolerance` False means no config
    kept val CA within the tolerance, so the one with the highest val CA was taken."""

    row: dict
    key: str
    tolerance: float
    base_ca: float
    within_tolerance: bool
    candidates: int  # configs within the tolerance
    reference: str = "base"  # whose val CA base_ca is: base (backdoored at S_n) or clean

    @property
    def config(self) -> NeuronConfig:
        return NeuronConfig(self.row["v_threshold_a"], self.row["tau_a"])

    def record(self) -> dict:
        """JSON-able: what was selected, on which key, and by which rule."""
        whose = "the clean model's val CA" if self.reference == "clean" else "val base CA"
        rule = (f"largest val ASR with val CA >= {whose} - tolerance"
                if self.within_tolerance else
                "no config within the CA tolerance: the highest val CA was taken")
        return {"key": self.key, "ca_tolerance": self.tolerance, "val_base_ca": self.base_ca,
                "ca_reference": self.reference,
                "within_tolerance": self.within_tolerance, "candidates": self.candidates,
                "rule": rule}


def select_attack_config(rows: list[dict], base_ca: float, tolerance: float, key: str,
                         fallback: bool = True, reference: str = "base") -> AttackChoice:
    """Eq. 8 on validation data: the largest val ASR (`key`) with val CA >= base - tolerance.

    Ties go to the config closest to nominal (lower V_thr), then to the higher CA: where the
    ASR saturates, a one-sample edge in val CA is noise, not a reason to move further from S_n.
    When no config is within the tolerance: the highest val CA (recorded in the choice) with
    `fallback`, else a ValueError.
    """
    if not rows:
        raise ValueError("no attack config to select from: the grid is empty")
    allowed = [r for r in rows if r["val_ca"] >= base_ca - tolerance]
    within = bool(allowed)
    if not within:
        if not fallback:
            best = max(r["val_ca"] for r in rows)
            raise ValueError(f"no attack config keeps val CA within {tolerance} of the val base "
                             f"CA {base_ca:.4f} (best {best:.4f}); widen the grid toward S_n or "
                             "raise badsnn.ca_tolerance")
        allowed = [max(rows, key=lambda r: r["val_ca"])]
    row = max(allowed, key=lambda r: (round(r[key], 6), -r["v_threshold_a"],
                                      round(r["val_ca"], 6)))
    return AttackChoice(row, key, tolerance, base_ca, within, len(allowed) if within else 0,
                        reference)
