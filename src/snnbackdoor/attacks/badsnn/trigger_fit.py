"""T_o's U-Net fit as a backdoor trigger: Eq. 5-6 at the adversarial config plus a term that
keeps the model's S_n answers, early-stopped on a held-out share of the T_o samples.

With `unet.objective: spikes` the adversarial term asks for fewer spikes at the adversarial
config instead of the target class: the trigger learns to starve the network, and only a
network that answers y_t when starved (the backdoor) sends the triggered input there.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...neurons import NeuronConfig, count_spikes, logits_and_spike_totals, use_config
from ...training import channels_last_layout, predict
from ...triggers.optimised import ConditionalUNet, UNetConfig, unet_loss

HELD_OUT = 8  # 1/8 of the T_o samples score the early stop


def _loss(model, generator, x, delta, keep, base, target, config: UNetConfig,
          adv: NeuronConfig | None, nominal: NeuronConfig,
          keep_weight: float) -> tuple[torch.Tensor, dict]:
    perturbation = generator(x, target)
    triggered = (x + perturbation).clamp(0, 1)
    with use_config(model, adv):
        if config.objective == "spikes":  # L_adv: spikes left, relative to the clean input's
            logits, spikes = logits_and_spike_totals(model, triggered)
            sim, _, wmse = config.weights
            loss, parts = unet_loss(perturbation, delta, logits, target, (sim, 0.0, wmse))
            l_spikes = (spikes / base.clamp_min(1.0)).mean()
            loss = loss + config.weights[1] * l_spikes
            parts["spikes"] = float(l_spikes.detach())
        else:
            loss, parts = unet_loss(perturbation, delta, model(triggered), target,
                                    config.weights)
    if keep_weight > 0:
        with use_config(model, nominal):
            l_keep = F.cross_entropy(model(triggered), keep)
        loss = loss + keep_weight * l_keep
        parts["keep"] = float(l_keep.detach())
    return loss, parts


def fit_trigger_unet(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, target: int,
                     num_classes: int, config: UNetConfig, adv: NeuronConfig | None,
                     nominal: NeuronConfig, keep_weight: float = 0.0,
                     patience: int | None = None, seed: int = 0,
                     progress: bool = False) -> tuple[ConditionalUNet, list[dict]]:
    """The T_o generator for frozen `model`: L = Eq. 5-6 at `adv` + keep_weight x CE at
    `nominal` to the model's own S_n answers; with `patience`, the epoch with the best
    held-out loss is kept and training stops `patience` epochs after it."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    keep = predict(model, x, neuron_config=nominal).to(x.device)
    base = keep  # unused by the target objective
    if config.objective == "spikes":
        with use_config(model, adv):
            base = count_spikes(model, x)["total"].to(x.device)
    held = len(x) // HELD_OUT if patience else 0
    order = torch.randperm(len(x), generator=gen).to(x.device)
    fit_i, held_i = order[held:], order[:held]
    generator = ConditionalUNet(x.shape[1], num_classes, config.width, config.eps,
                                config.form).to(x.device)
    opt = torch.optim.Adam(generator.parameters(), lr=config.lr)
    steps = config.epochs * -(-len(fit_i) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    history: list[dict] = []
    best, best_state, since = float("inf"), None, 0
    args = (target, config, adv, nominal, keep_weight)
    try:
        with channels_last_layout(model):
            for epoch in tqdm(range(config.epochs), desc="T_o U-Net", leave=False,
                              disable=not progress):
                generator.train()
                perm = fit_i[torch.randperm(len(fit_i), generator=gen).to(x.device)]
                total = 0.0
                for start in range(0, len(perm), config.batch_size):
                    i = perm[start:start + config.batch_size]
                    loss, _ = _loss(model, generator, x[i], delta[i], keep[i], base[i], *args)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(i)
                row = {"epoch": epoch + 1, "loss": total / len(perm)}
                if held:
                    generator.eval()
                    with torch.no_grad():
                        row["held_out_loss"] = float(_loss(
                            model, generator, x[held_i], delta[held_i], keep[held_i],
                            base[held_i], *args)[0])
                    if row["held_out_loss"] < best:
                        best, best_state, since = row["held_out_loss"], \
                            copy.deepcopy(generator.state_dict()), 0
                    else:
                        since += 1
                history.append(row)
                if held and since >= patience:
                    break
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    if best_state is not None:
        generator.load_state_dict(best_state)
    return generator.eval(), history
