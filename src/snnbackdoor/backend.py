"""Which implementation runs the spiking neurons, and a fused CPU kernel for LIF / IF.

What SpikingJelly 2.0 offers (read from `spikingjelly/activation_based/neuron/lif.py`,
`spikingjelly/activation_based/functional/neuron.py` and `spikingjelly/_ops/selection.py`):

* Nodes take no `backend=` argument any more (0.0.0.0.14 had `backend='torch'|'cupy'`).
  `LIFNode.multi_step_forward` calls `functional.lif_multi_step`, which dispatches on the
  tensor's device to a registered op `sj_lif::forward` (likewise `sj_if`, `sj_plif`).
* On CUDA the op picks, once per device, the first implementation that loads in the order
  native CUDA extension > Triton > torch (`_DEFAULT_CUDA_PRIORITY`; under `torch.compile`
  Triton comes first). That is already the fastest available: there is nothing to set.
  `SJ_LIF_CUDA_IMPLEMENTATION` / `SJ_IF_CUDA_IMPLEMENTATION` / `SJ_PLIF_CUDA_IMPLEMENTATION`
  (`auto` | `cuda` | `triton` | `torch`) force one; they are read when SpikingJelly is
  imported, so set them in the environment, not from Python. `neuron_implementations()`
  reports the choice through SpikingJelly's own `functional.neuron_implementation`.
  The fused CUDA/Triton kernels need a built-in surrogate with a float `alpha` (ATan,
  Sigmoid, PiecewiseQuadratic... all of ours) and float32/float16/bfloat16 inputs.
* On CPU the autograd kernel of `sj_lif::forward` is the torch *reference*: the forward is
  recorded op by op (a surrogate autograd node per time step) and backward replays it.

`FusedCPUNeuron` is our CPU path for LIFNode and IFNode: the forward runs without an
autograd graph, writes spikes into one preallocated buffer and, while each step's potential
H[t] is still in cache, its surrogate slope dS/dH (only when a gradient will be needed); the
backward is the closed-form BPTT recursion (the one SpikingJelly's
`spikingjelly/_ops/lif/cpu.py::_backward_impl` uses for its "torch" provider on CUDA): a few
passes over [T, ...] plus one fused op per step. On this project's CPU it takes about half
the time of SpikingJelly's reference for a forward + backward. The forward is bit-identical
to SpikingJelly's reference; gradients agree up to float rounding. It is attached per node
(`use_fused_cpu_neurons`), never by patching SpikingJelly, and a node falls back to
SpikingJelly whenever the fused path does not apply (CUDA, other dtypes, `store_v_seq`,
explicit neuron precision, PLIF's learned tau, custom surrogates, under `torch.compile`).
The node keeps its type, parameters, state and hyperparameters, so `set_neuron_params`,
`reset_net`, hooks, deepcopy and checkpoints see an ordinary SpikingJelly node.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

NEURON_BACKENDS = ("auto", "spikingjelly")
_FUSED_TYPES = (sj_neuron.LIFNode, sj_neuron.IFNode)


# ---------------------------------------------------------------- surrogate derivatives


# Each overwrites `x` (H - V_thr for one step) with the slope, in place, and returns it.


def _atan_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)"""
    return x.mul_(math.pi / 2 * alpha).square_().add_(1).reciprocal_().mul_(alpha / 2)


def _sigmoid_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - s) * s * alpha with s = sigmoid(alpha * x)"""
    s = x.mul_(alpha).sigmoid_()
    return s.addcmul_(s, s, value=-1.0).mul_(alpha)  # s - s * s, in place


def _piecewise_quadratic_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """max(0, alpha - alpha ** 2 * |x|)"""
    return x.abs_().mul_(-alpha * alpha).add_(alpha).clamp_min_(0)


# The same formulas as SpikingJelly's `spikingjelly/_ops/surrogate.py::_surrogate_gradient`.
SURROGATE_GRADIENTS: dict[type, Callable[[torch.Tensor, float], torch.Tensor]] = {
    sj_surrogate.ATan: _atan_grad,
    sj_surrogate.Sigmoid: _sigmoid_grad,
    sj_surrogate.PiecewiseQuadratic: _piecewise_quadratic_grad,
}


# ---------------------------------------------------------------- the fused kernel


class FusedCPUNeuron(torch.autograd.Function):
    """Multi-step LIF (tau > 1) or IF (tau = None) with a closed-form backward.

    forward(x_seq [T, ...], v0 [...], ...) -> (spikes [T, ...], v_final [...]).
    Few, mostly in-place passes over [T, ...] buffers: on CPU the cost is memory traffic and
    fresh allocations, not arithmetic.
    """

    @staticmethod
    def forward(ctx, x_seq, v, tau, decay_input, v_threshold, v_reset, detach_reset,
                surrogate_grad, alpha, needs_grad):
        charged = torch.empty_like(x_seq)
        spikes = torch.empty_like(x_seq)
        # dS/dH per step, computed while H[t] is still in cache; what the backward needs
        slopes = torch.empty_like(x_seq) if needs_grad else None
        halving = tau is not None and math.frexp(tau)[0] == 0.5  # tau = 2**k: x / tau exact
        for t in range(x_seq.shape[0]):
            h, s = charged[t], spikes[t]
            # The same values as SpikingJelly's reference charge, bit for bit.
            if tau is None:  # IF: H = V + X
                torch.add(v, x_seq[t], out=h)
            elif decay_input:  # H = V + (X - (V - V_reset)) / tau
                torch.sub(x_seq[t], v if v_reset in (None, 0.0) else v - v_reset, out=h)
                if halving:  # V + d * 2**-k: the product is exact, so is the sum's rounding
                    torch.add(v, h, alpha=1.0 / tau, out=h)
                else:
                    h.div_(tau).add_(v)
            else:  # H = V - (V - V_reset) / tau + X
                torch.sub(v, (v if v_reset in (None, 0.0) else v - v_reset) / tau, out=h)
                h.add_(x_seq[t])
            torch.ge(h, v_threshold, out=s)  # S = heaviside(H - V_thr), as 0.0 / 1.0
            if slopes is not None:
                torch.sub(h, v_threshold, out=slopes[t])
                surrogate_grad(slopes[t], alpha)
            if v_reset is None:  # soft reset: V = H - V_thr * S
                v = torch.add(h, s, alpha=-v_threshold)
            elif v_reset == 0.0:  # hard reset to 0: V = H - H * S (exactly 0 or H)
                v = torch.addcmul(h, h, s, value=-1.0)
            else:  # hard reset: V = H + S * (V_reset - H)
                v = torch.addcmul(h, s, v_reset - h)
        if needs_grad:
            ctx.save_for_backward(slopes, spikes, charged if not detach_reset else None)
        ctx.config = (tau, decay_input, v_threshold, v_reset, detach_reset)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        sg, spikes, charged = ctx.saved_tensors
        tau, decay_input, v_threshold, v_reset, detach_reset = ctx.config
        decay = 1.0 if tau is None else 1.0 - 1.0 / tau  # dH[t+1]/dV[t]
        # keep = decay * dV[t]/dH[t] through the reset
        if v_reset is None:
            keep = torch.full_like(sg, decay) if detach_reset else (
                (1 - v_threshold * sg).mul_(decay))
        else:
            keep = torch.mul(spikes, -decay).add_(decay)  # decay * (1 - S)
            if not detach_reset:
                keep.add_((v_reset - charged).mul_(sg).mul_(decay))
        # grad_h[t] = grad_s[t] * sg[t] + grad_h[t+1] * keep[t]   (backwards in time)
        grad_h = sg * grad_spikes if grad_spikes is not None else torch.zeros_like(sg)
        last = sg.shape[0] - 1
        if grad_v is not None:
            grad_h[last].addcmul_(grad_v, keep[last] / decay)
        for t in range(last - 1, -1, -1):
            grad_h[t].addcmul_(grad_h[t + 1], keep[t])
        grad_v0 = grad_h[0] * decay
        if tau is not None and decay_input:
            grad_h.div_(tau)
        return grad_h, grad_v0, None, None, None, None, None, None, None, None


def fused_path_applies(node: nn.Module, x_seq: torch.Tensor) -> bool:
    """Whether `FusedCPUNeuron` computes exactly what `node` would (else use SpikingJelly)."""
    surrogate = getattr(node, "surrogate_function", None)
    alpha = getattr(surrogate, "alpha", None)
    return (
        type(node) in _FUSED_TYPES
        and x_seq.device.type == "cpu"
        and x_seq.dtype == torch.float32
        and x_seq.ndim >= 2
        and not node.store_v_seq
        and getattr(node, "_neuron_precision", None) is None
        and type(surrogate) in SURROGATE_GRADIENTS
        and getattr(surrogate, "spiking", True)
        and isinstance(alpha, (int, float))
        and not torch.compiler.is_compiling()
        and (type(node) is sj_neuron.IFNode or node.tau > 1.0)
    )


def _initial_voltage(node: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """The node's voltage as a tensor shaped like one step (as SpikingJelly materialises it)."""
    v = node._memories["v"]
    if isinstance(v, torch.Tensor) and v.shape == x_seq.shape[1:]:
        return v.to(dtype=x_seq.dtype, device=x_seq.device)
    fill = v if not isinstance(v, torch.Tensor) else (node.v_reset or 0.0)
    return torch.full_like(x_seq[0], float(fill))


def fused_multi_step_forward(self: nn.Module, x_seq: torch.Tensor, *args, **kwargs):
    """`multi_step_forward` for a LIFNode / IFNode that takes the fused path when it applies."""
    if args or kwargs or not fused_path_applies(self, x_seq):
        return type(self).multi_step_forward(self, x_seq, *args, **kwargs)
    tau = None if type(self) is sj_neuron.IFNode else float(self.tau)
    decay_input = bool(getattr(self, "decay_input", True))
    v_reset = None if self.v_reset is None else float(self.v_reset)
    spikes, v = FusedCPUNeuron.apply(
        x_seq,
        _initial_voltage(self, x_seq),
        tau,
        decay_input,
        float(self.v_threshold),
        v_reset,
        bool(self.detach_reset),
        SURROGATE_GRADIENTS[type(self.surrogate_function)],
        float(self.surrogate_function.alpha),
        torch.is_grad_enabled() and (x_seq.requires_grad or self._memories["v"] is not None
                                     and getattr(self._memories["v"], "requires_grad", False)),
    )
    self._memories["v"] = v
    self.v_seq = None
    return spikes


def use_fused_cpu_neurons(module: nn.Module, enabled: bool = True) -> int:
    """Attach (or detach) the fused CPU path to every LIFNode / IFNode in `module`.

    Returns how many nodes were switched. Nodes keep their class; the fused path is an
    instance-level `multi_step_forward` that defers to SpikingJelly when it does not apply.
    """
    count = 0
    for node in module.modules():
        if type(node) not in _FUSED_TYPES:
            continue
        if enabled:
            node.multi_step_forward = types.MethodType(fused_multi_step_forward, node)
            count += 1
        elif "multi_step_forward" in node.__dict__:
            del node.multi_step_forward
            count += 1
    return count


def set_neuron_backend(module: nn.Module, backend: str = "auto") -> int:
    """`auto`: fused CPU kernel where it applies, SpikingJelly's own choice elsewhere.
    `spikingjelly`: SpikingJelly everywhere (its torch reference on CPU)."""
    if backend not in NEURON_BACKENDS:
        raise ValueError(f"neuron backend must be one of {list(NEURON_BACKENDS)}, got {backend!r}")
    return use_fused_cpu_neurons(module, enabled=backend == "auto")


def uses_fused_cpu_neurons(module: nn.Module) -> bool:
    """Whether any node of `module` has the fused CPU path attached."""
    return any("multi_step_forward" in m.__dict__ for m in module.modules()
               if type(m) in _FUSED_TYPES)


def neuron_implementations(device: torch.device | str) -> dict[str, str]:
    """What runs LIF, IF and PLIF on `device`: e.g. {'lif': 'cuda', ...} on a GPU box."""
    device = torch.device(device)
    if device.type == "cpu":
        return {"lif": "fused-cpu (snnbackdoor)", "if": "fused-cpu (snnbackdoor)",
                "plif": "torch-reference (spikingjelly)"}
    report = {}
    for name in ("lif", "if", "plif"):
        try:
            found = sj_functional.neuron_implementation(name, device)
            report[name] = str(found["implementation"])
        except (RuntimeError, ValueError, ImportError) as error:  # no kernel: say why
            report[name] = f"unavailable ({error})"
    return report
