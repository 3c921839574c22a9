"""The NTK probe of LensLLM: F(Theta, t) = ||exp(-eta Theta t) r||^2 (LensLLM, ICML 2025).

At the start of fine-tuning, on ``k`` probe examples, :func:`empirical_ntk` builds the empirical
neural tangent kernel ``Theta`` (k x k): the Gram matrix of the per-example loss gradients with
respect to the trainable parameters (only the adapter's for a PEFT model), and keeps the initial
per-example losses ``r``. Per-example gradients come from ``torch.func`` (``functional_call`` and
``vmap(grad)``), a chunk of examples at a time, or, for a model ``torch.func`` cannot transform,
from plain autograd one example at a time; when ``k x parameters`` would not fit the memory
budget, each gradient goes through a random sign sketch to ``projection_dim`` numbers first, so
memory stays bounded whatever the model size. At the end of training :func:`ntk_F` evaluates F
for the run's learning rate and number of optimizer steps from the eigendecomposition of Theta.

Example (an illustration: ``model`` is yours, ``batch`` a collated dict of k examples)::

    probe = empirical_ntk(model, batch)
    probe.F(eta=5e-5, t=100)           # F after 100 steps at learning rate 5e-5, in [0, ||r||^2]
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

__all__ = ["NTKProbe", "empirical_ntk", "ntk_F", "preserved_state", "rng_state", "set_rng_state"]

#: Sketch width when gradients are projected: inner products keep a relative error of about
#: sqrt(2 / projection_dim), 1.6 % here, far below the run-to-run noise of a fine-tune.
DEFAULT_PROJECTION_DIM = 8192


@dataclass
class NTKProbe:
    """What the probe measured at the start of fine-tuning.

    Attributes:
        eigenvalues: eigenvalues of Theta, ascending, clipped at 0 (Theta is a Gram matrix).
        coefficients: ``V.T @ r``, the initial losses in Theta's eigenbasis; with the
            eigenvalues they give F for any eta and t.
        r: the initial per-example losses.
        n_params: number of trainable parameters the gradients were taken with respect to.
        projection_dim: sketch width, or None when Theta is exact.
        method: ``"vmap"`` (batched per-example gradients, ``torch.func``) or ``"loop"`` (one
            example at a time with plain autograd, for models that ``torch.func`` cannot
            transform: data-dependent control flow such as SDPA's masks, custom kernels).
        seconds: wall time of the probe.
        zero_gradient_parameters: trainable tensors whose gradient was exactly zero on every
            probe example (a fresh LoRA's ``lora_A``, because ``lora_B`` starts at zero).
    """

    eigenvalues: list[float]
    coefficients: list[float]
    r: list[float]
    n_params: int
    projection_dim: int | None = None
    method: str = "vmap"
    seconds: float = 0.0
    zero_gradient_parameters: int = 0
    gram: list[list[float]] = field(default_factory=list, repr=False)

    @property
    def k(self) -> int:
        return len(self.r)

    def F(self, eta: float, t: float) -> float:
        """F(Theta, t) = ||exp(-eta Theta t) r||^2 for learning rate ``eta`` and ``t`` steps."""
        return ntk_F(self.eigenvalues, self.coefficients, eta * t)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["gram"]  # k x k numbers; the spectrum and coefficients carry what F needs
        out["k"] = self.k
        return out


def ntk_F(eigenvalues, coefficients, eta_t: float) -> float:
    """``sum_i exp(-2 eta t lambda_i) c_i^2``: F from Theta's spectrum, never overflowing or negative.

    ``exp(-eta Theta t) r = V exp(-eta Lambda t) V.T r``, so its squared norm is a sum of
    non-negative terms whose exponents are all <= 0 (lambda is clipped at 0): each factor lies in
    [0, 1], and F lies in [0, ||r||^2].

    Example:
        >>> ntk_F([0.0, 2.0], [1.0, 1.0], eta_t=1e9)
        1.0
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    coef = np.asarray(coefficients, dtype=np.float64)
    if not math.isfinite(eta_t) or eta_t < 0:
        raise ValueError(f"eta * t must be a finite number >= 0, got {eta_t}")
    with np.errstate(over="ignore", under="ignore"):
        decay = np.exp(-2.0 * eta_t * lam)  # an overflowing exponent is -inf, and exp(-inf) = 0
    return float(np.sum(decay * coef**2))


def empirical_ntk(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
                  projection_dim: int | None = None, max_memory_mb: float = 2048.0,
                  chunk_size: int | None = None, seed: int = 0) -> NTKProbe:
    """Theta (k x k) and r on the ``k`` examples of a collated ``batch``, with torch.func.

    Args:
        model: the model being fine-tuned (a PEFT model too); gradients are taken with respect
            to its parameters with ``requires_grad`` only. It is run in eval mode (no dropout)
            and left exactly as it was: training modes, ``.grad`` (untouched) and the RNG
            state; its attention implementation is never touched.
        batch: tensors with a leading dimension of ``k`` and the labels, as the Trainer's data
            collator makes them; the model must return ``.loss``.
        projection_dim: sketch width, a power of two; None picks exact when the ``k`` gradients
            fit in ``max_memory_mb`` and :data:`DEFAULT_PROJECTION_DIM` otherwise; 0 forces exact.
        max_memory_mb: the budget that sets the exact/projected choice and the chunk size.
            Approximate: activations are not counted.
        chunk_size: examples per vmap call; None derives it from the budget.
        seed: seed of the sketch's random signs.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> _ = torch.manual_seed(0)
        >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
        >>> ids = torch.randint(0, 32, (4, 8))
        >>> probe = empirical_ntk(model, {"input_ids": ids, "labels": ids})
        >>> probe.k, len(probe.eigenvalues), min(probe.eigenvalues) >= 0
        (4, 4, True)
    """
    started = time.perf_counter()
    batch = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
    if not batch:
        raise ValueError("the probe batch holds no tensors; pass collated model inputs with labels")
    k = next(iter(batch.values())).shape[0]
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad); nothing to probe")
    n_params = sum(p.numel() for p in params.values())
    # What the budget pays for: per example in a chunk, its gradients and the backward pass's
    # temporaries (about 3 x 4 bytes per parameter, measured on GPT-2), plus the k exact
    # gradients when there is no sketch (4 bytes per parameter each).
    budget = max_memory_mb * 2**20
    per_example = 12 * n_params
    if projection_dim is None:
        projection_dim = 0 if 4 * k * n_params + per_example <= budget else DEFAULT_PROJECTION_DIM
    if projection_dim and projection_dim & (projection_dim - 1):
        raise ValueError(f"projection_dim={projection_dim}: use a power of two (the default is {DEFAULT_PROJECTION_DIM})")
    kept = 0 if projection_dim else 4 * k * n_params
    if chunk_size is None:
        chunk_size = int(max(1, min(k, (budget - kept) // max(1, per_example))))
    device = next(iter(params.values())).device
    batch = {key: value.to(device) for key, value in batch.items()}

    def loss_of(p: dict[str, torch.Tensor], example: dict[str, torch.Tensor]) -> torch.Tensor:
        one = {key: value.unsqueeze(0) for key, value in example.items()}
        return _loss(functional_call(model, p, args=(), kwargs=one))

    grad_loss = grad_and_value(loss_of)
    sketch = _Sketch(params, projection_dim, seed) if projection_dim else None
    rows: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    nonzero = {name: False for name in params}
    method = "vmap"
    with preserved_state(model), torch.no_grad():
        start = 0
        while start < k:
            chunk = {key: value[start:start + chunk_size] for key, value in batch.items()}
            try:
                if method == "vmap":
                    grads, loss = vmap(grad_loss, in_dims=(None, 0))(params, chunk)
                else:
                    grads, loss = _loop(model, chunk)
            except Exception:
                if method == "loop":
                    raise
                # Some forward passes branch on tensor values (SDPA's mask helpers, T5's padding
                # check) or run kernels torch.func cannot transform; plain autograd, one example
                # at a time, handles every model.
                method = "loop"
                continue
            for name, g in grads.items():
                nonzero[name] = nonzero[name] or bool(g.abs().amax() > 0)
            flat = sketch(grads) if sketch else torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], 1)
            rows.append(flat)
            losses.append(loss.detach().reshape(-1))
            start += chunk_size
    G = torch.cat(rows)
    gram = _gram(G)
    r = torch.cat(losses).double().cpu().numpy()
    if not (np.all(np.isfinite(gram)) and np.all(np.isfinite(r))):
        raise FloatingPointError("the probe's gradients or losses are not finite (NaN/inf) at initialisation")
    eigenvalues, vectors = np.linalg.eigh(gram)
    return NTKProbe(
        eigenvalues=np.clip(eigenvalues, 0.0, None).tolist(),
        coefficients=(vectors.T @ r).tolist(),
        r=r.tolist(),
        n_params=int(n_params),
        projection_dim=projection_dim or None,
        method=method,
        seconds=time.perf_counter() - started,
        zero_gradient_parameters=sum(not v for v in nonzero.values()),
        gram=gram.tolist(),
    )


def _loss(output) -> torch.Tensor:
    if output.loss is None:
        raise ValueError("the model returned no loss on the probe examples; they need labels "
                         "(the Trainer's data collator should add them)")
    return output.loss


def _loop(model: torch.nn.Module, chunk: Mapping[str, torch.Tensor]):
    """Per-example gradients with plain autograd, one example at a time (``.grad`` untouched)."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in trainable}
    losses = []
    with torch.enable_grad():
        for i in range(next(iter(chunk.values())).shape[0]):
            loss = _loss(model(**{key: value[i:i + 1] for key, value in chunk.items()}))
            got = torch.autograd.grad(loss, list(trainable.values()), allow_unused=True)
            for (name, p), g in zip(trainable.items(), got):
                grads[name].append(torch.zeros_like(p) if g is None else g.detach())
            losses.append(loss.detach())
    return {name: torch.stack(g) for name, g in grads.items()}, torch.stack(losses)


def _gram(G: torch.Tensor, block: int = 1 << 20) -> np.ndarray:
    """G @ G.T accumulated in float64, a block of columns at a time (bounded extra memory)."""
    k = G.shape[0]
    out = torch.zeros(k, k, dtype=torch.float64)
    for start in range(0, G.shape[1], block):
        part = G[:, start:start + block].double().cpu()
        out += part @ part.T
    out = (out + out.T) / 2  # exact symmetry for eigh
    return out.numpy()


class _Sketch:
    """A count sketch: ``<S a, S b>`` estimates ``<a, b>`` without bias.

    Every gradient coordinate gets a random bucket and a random sign, drawn together as one
    slot among ``2 * dim`` (slot ``j`` adds to bucket ``j mod dim``, with a minus sign in the
    upper half), so one ``index_add_`` per tensor does the projection. Slots come from simple
    tabulation hashing: coordinate ``i`` of a tensor goes to ``high[i // 4096] ^ low[i % 4096]``
    with two small random tables per tensor, which is 3-wise independent (more than the
    pairwise independence a count sketch needs) and costs one broadcast XOR, with no per-
    coordinate random draw and nothing kept between chunks.
    """

    LOW = 4096

    def __init__(self, params: Mapping[str, torch.Tensor], dim: int, seed: int):
        self.dim = dim
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
        for name, p in params.items():
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
            rows = -(-p.numel() // self.LOW)
            high = torch.randint(0, 2 * dim, (rows, 1), generator=gen).to(p.device)
            low = torch.randint(0, 2 * dim, (1, self.LOW), generator=gen).to(p.device)
            self.tables[name] = (high, low, p.numel())

    def __call__(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        first = next(iter(grads.values()))
        slots = torch.zeros(first.shape[0], 2 * self.dim, dtype=torch.float32, device=first.device)
        for name, g in grads.items():
            high, low, n = self.tables[name]
            index = (high ^ low).reshape(-1)[:n]
            slots.index_add_(1, index, g.reshape(g.shape[0], -1).float())
        return slots[:, : self.dim] - slots[:, self.dim:]


@contextlib.contextmanager
def preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Run the probe in eval mode, then put everything back as it was.

    Restored: each module's ``training`` flag and the RNG states (torch CPU and CUDA, numpy,
    random), so the run's data order, dropout masks and final loss are the same with and
    without the probe. The attention implementation is left alone: where its mask helpers
    branch on tensor values (SDPA), vmap cannot trace them and the probe takes one example at
    a time instead.
    """
    modes = [(module, module.training) for module in model.modules()]
    rng = rng_state()
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        set_rng_state(rng)


def rng_state() -> tuple:
    """Every RNG a training step may draw from: torch (CPU and CUDA), numpy, random."""
    return (torch.get_rng_state(), np.random.get_state(), random.getstate(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def set_rng_state(state: tuple) -> None:
    """Put back what :func:`rng_state` saved."""
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])
