"""BadSNN's options: one dataclass for the attack (`attack_options.badsnn` of a matrix) and
for the `badsnn:` section of a `kind: badsnn` config, so both read the same keys.

tau is in SpikingJelly's convention (paper 0.5 -> 2.0). `target_class_ratio` is P of the
paper, a share of the *target class* (not of the whole split, as the matrix's
`poison_ratio` is).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...neurons import NeuronConfig
from ...triggers.optimised import BLEND_MODES, DELTA_SIGNS, UNetConfig
from .collapse import COLLAPSE_TARGETS

CA_REFERENCES = ("base", "clean")
TRIGGERS = ("auto", "optimised", "noise", "thinning")
EVENT_TRIGGERS = ("noise", "thinning")
# The metric key each selecting trigger is measured under (asr_o: T_o, asr_s: T_s).
TRIGGER_KEYS = {"optimised": "asr_o", "noise": "asr_s", "thinning": "asr_thin"}


@dataclass
class BadSNNOptions:
    """Dual-spike training, attack-config search, T_o fit and control of BadSNN."""

    target_class_ratio: float = 0.5  # P = |D_t^p| / |D_t| (digits: ~60 of ~120 target samples)
    v_threshold_t: float | None = None  # malicious V_thr^t; None = choose automatically
    tau_t: float = 2.0
    # Weight of Eq. 2's S_t term (1: the paper). Digits need more: with about 3 D_t^p samples
    # in a batch of 64 the S_t term never fits its own samples at weight 1.
    malicious_weight: float = 1.0
    # A target equal to the clean model's collapse class (its answer with silent neurons, or
    # at S_t) measures silence, not a backdoor: refuse (error), avoid (next free class), allow.
    collapse_target: str = "refuse"
    auto_grid: list[float] = field(
        default_factory=lambda: [1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0]
    )
    auto_level: float | None = None  # clean val accuracy to fall below; None = 2x chance
    v_thresholds_a: list[float] = field(
        # Steps of 0.02 where digits models go from clean to collapsed (1.2-1.5).
        default_factory=lambda: [1.0, 1.1, *(round(1.2 + 0.02 * i, 2) for i in range(16)),
                                 1.55, 1.6]
    )
    taus_a: list[float] = field(default_factory=lambda: [2.0])
    # Selection: val CA >= the reference's val CA - tolerance. docs/methods.md 1.4 names 5
    # points; 3 leave room for val/test noise (216 val digits: +-1.5 points).
    ca_tolerance: float = 0.03
    # What val CA is measured against: base (the backdoored model at S_n) or clean (the clean
    # model trained with the same recipe, which is what the attack is compared with).
    ca_reference: str = "base"
    power: float = 3.0  # q of T_p(x) = x^q
    # The trigger that selects the attack config: optimised (T_o, images), noise (T_s, the
    # paper's event trigger) or thinning (ours: each event kept with probability
    # thinning_keep). auto: optimised on images, noise on event frames (resolved at run time
    # and recorded as `trigger` in the metrics).
    trigger: str = "auto"
    noise_beta: float = 0.03
    # Event frames fed to the model: "unit" divides them by the training split's largest count
    # (T_s acts on [0, 1], as docs/methods.md 1.4 states); "counts" feeds raw event counts, as
    # SpikingJelly's frame datasets and the N-MNIST-Net code lineage do, so Eq. 7's clip caps
    # every count at 1. "counts" also measures T_s on unit-scaled frames (asr_s_unit).
    frames: str = "unit"
    # Event frames: ASR of T_s at the selected attack config for each beta (a measurement,
    # never used for selection). beta 0 isolates the clip: on count frames it does the work.
    noise_beta_sweep: list[float] = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.2, 0.5])
    thinning_keep: float = 0.7
    deepfool_overshoot: float = 0.02
    deepfool_max_iter: int = 50
    deepfool_samples: int = 512  # training samples the T_o targets are built from
    blend_k: int = 11
    blend_mode: str = "eq4"  # eq4 (as written) | image
    delta_sign: str = "signed"  # signed: x_blend - x | abs: |x - x_blend| as Eq. 4 writes it
    unet: UNetConfig = field(default_factory=UNetConfig)  # the T_o generator's training
    # T_o as a backdoor trigger (0 / [] / null: the paper's T_o). keep_weight: CE at S_n to
    # the model's own nominal answer, so T_o stays dormant at S_n. eps_grid: the L_inf budgets
    # tried, largest first; eps is the largest whose control (T_o re-fitted against the clean
    # model at S_a) keeps val ASR <= eps_control_max. unet_patience: epochs without a better
    # held-out U-Net loss (1/8 of the T_o samples) before stopping.
    keep_weight: float = 0.0
    eps_grid: list[float] = field(default_factory=list)
    eps_control_max: float = 0.10
    # With eps_grid: an eps also needs the backdoored T_o to stay dormant at S_n, val ASR at
    # S_n <= eps_nominal_max (null: no such condition).
    eps_nominal_max: float | None = None
    unet_patience: int | None = None
    # Also fit T_o (images) or apply the event triggers against the clean model at the
    # selected attack config: what the backdoor adds over plain adversarial vulnerability.
    control: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_class_ratio <= 1.0:
            raise ValueError("badsnn.target_class_ratio (share of the target class) must be in "
                             f"(0, 1], got {self.target_class_ratio}")
        NeuronConfig(self.v_threshold_t, self.tau_t)
        for v in self.v_thresholds_a:
            NeuronConfig(v_threshold=v)
        for tau in self.taus_a:
            NeuronConfig(tau=tau)
        if not self.v_thresholds_a or not self.taus_a:
            raise ValueError("badsnn.v_thresholds_a and badsnn.taus_a need one value at least")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"badsnn.trigger must be one of {TRIGGERS}: optimised on images, "
                             "noise or thinning on event frames, auto picks by data kind")
        if self.frames not in ("unit", "counts"):
            raise ValueError("badsnn.frames must be 'unit' (frames / largest training count) "
                             "or 'counts' (raw event counts)")
        if any(beta < 0 for beta in self.noise_beta_sweep):
            raise ValueError("badsnn.noise_beta_sweep values must be >= 0")
        if not 0.0 <= self.thinning_keep <= 1.0:
            raise ValueError(f"badsnn.thinning_keep must be in [0, 1], got {self.thinning_keep}")
        if self.blend_mode not in BLEND_MODES:
            raise ValueError(f"badsnn.blend_mode must be one of {BLEND_MODES}")
        if self.delta_sign not in DELTA_SIGNS:
            raise ValueError(f"badsnn.delta_sign must be one of {DELTA_SIGNS}")
        if self.collapse_target not in COLLAPSE_TARGETS:
            raise ValueError(f"badsnn.collapse_target must be one of {COLLAPSE_TARGETS}")
        if not self.malicious_weight > 0 or self.keep_weight < 0:
            raise ValueError("badsnn.malicious_weight must be > 0 and badsnn.keep_weight >= 0")
        if any(not 0 < e <= 1 for e in self.eps_grid):
            raise ValueError("badsnn.eps_grid values are L_inf budgets in (0, 1]")
        if not 0 <= self.eps_control_max <= 1:
            raise ValueError("badsnn.eps_control_max must be in [0, 1]")
        if self.eps_nominal_max is not None and not 0 <= self.eps_nominal_max <= 1:
            raise ValueError("badsnn.eps_nominal_max must be in [0, 1] (or null)")
        if self.ca_reference not in CA_REFERENCES:
            raise ValueError(f"badsnn.ca_reference must be one of {CA_REFERENCES}")
        if not 0 <= self.ca_tolerance < 1:
            raise ValueError("badsnn.ca_tolerance is a share of accuracy in [0, 1)")
        if self.unet_patience is not None and self.unet_patience < 1:
            raise ValueError("badsnn.unet_patience must be >= 1 (or null: no early stop)")
        if not self.power > 0:
            raise ValueError("badsnn.power must be > 0")
        if self.deepfool_samples < 1:
            raise ValueError("badsnn.deepfool_samples must be >= 1")


def resolve_trigger(options: BadSNNOptions, data_kind: str) -> str:
    """The selecting trigger for this data kind: `auto` resolved, a mismatch refused."""
    events = data_kind == "events"
    if options.trigger == "auto":
        return "noise" if events else "optimised"
    if events and options.trigger not in EVENT_TRIGGERS:
        raise ValueError(f"badsnn.trigger {options.trigger!r} is for images; on event frames "
                         f"use one of {EVENT_TRIGGERS} (or auto)")
    if not events and options.trigger in EVENT_TRIGGERS:
        raise ValueError(f"badsnn.trigger {options.trigger!r} is for event frames; on images "
                         "use 'optimised' (or auto)")
    return options.trigger
