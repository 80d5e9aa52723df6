"""One client's local training for one round: DP-SGD with Opacus, or plain training.

DP covers every trainable parameter jointly (A, B and head): per-sample gradients of the whole
trainable set are clipped together to norm ``clip``, Gaussian noise of std ``sigma * clip`` is
added to their sum, and batches are Poisson-sampled with rate ``q = batch_size / n``, which is what
the accountant assumes. Each call wraps the model with Opacus hooks and removes them afterwards, so
one model object can serve several clients in turn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from secure_fedsa.errors import PrivacyError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Opacus' hooks fire on a frozen embedding input; harmless, and noisy on every step.
warnings.filterwarnings("ignore", message="Full backward hook is firing")

# Local optimizers by name. AdamW is the default; plain SGD makes an update equal to -lr * the
# (noisy, clipped) gradient, which the zero-noise equivalence tests rely on.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


@dataclass(frozen=True)
class DPSettings:
    """Per-round DP-SGD parameters. ``sample_rate`` is the Poisson rate the accountant uses."""

    noise_multiplier: float
    clip: float
    sample_rate: float
    secure_mode: bool = False

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise PrivacyError(f"noise multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.clip > 0:
            raise PrivacyError(f"clip must be > 0, got {self.clip}")
        if not 0 < self.sample_rate <= 1:
            raise PrivacyError(f"sample rate must be in (0, 1], got {self.sample_rate}")


@dataclass(frozen=True)
class RoundStats:
    steps: int
    examples: int
    mean_loss: float


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    input_ids, attention_mask, labels = batch
    logits = model(input_ids, attention_mask)
    return nn.functional.cross_entropy(logits, labels)


def _split(batch: Batch, size: int) -> Iterator[Batch]:
    n = batch[0].shape[0]
    for start in range(0, n, size):
        yield tuple(t[start : start + size] for t in batch)  # type: ignore[misc]


def _cycle(make_loader: Callable[[], DataLoader]) -> Iterator[Batch]:
    while True:
        yield from make_loader()


def train_plain(
    model: nn.Module,
    data: TensorDataset,
    *,
    steps: int,
    batch_size: int,
    physical_batch_size: int,
    lr: float,
    generator: torch.Generator,
    optimizer: str = "adamw",
    on_step: Callable[[], None] | None = None,
) -> RoundStats:
    """``steps`` optimizer steps on shuffled batches. No privacy."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr)
    sampler_gen = torch.Generator().manual_seed(
        int(torch.randint(0, 2**31, (1,), generator=generator))
    )

    def loader() -> DataLoader:
        sampler = RandomSampler(data, generator=sampler_gen)
        return DataLoader(data, batch_size=batch_size, sampler=sampler)

    batches = _cycle(loader)
    total_loss, examples = 0.0, 0
    model.train()
    for _ in range(steps):
        batch = next(batches)
        n = batch[0].shape[0]
        opt.zero_grad(set_to_none=True)
        for part in _split(batch, physical_batch_size):
            loss = _loss(model, part) * (part[0].shape[0] / n)
            loss.backward()
            total_loss += loss.item() * n
        opt.step()
        examples += n
        if on_step is not None:
            on_step()
    return RoundStats(steps=steps, examples=examples, mean_loss=total_loss / max(examples, 1))


@dataclass
class _DPStepper:
    """How one clipping mode computes clipped per-sample gradients of a batch piece."""

    backward: Callable[[Batch], float]  # forward + backward of one piece; returns summed loss
    optimizer: torch.optim.Optimizer  # an Opacus DPOptimizer (adds noise at the real step)
    close: Callable[[], None]
    empty: Callable[[list[torch.nn.Parameter]], None]  # prepare a step on an empty batch


def _noise_settings(dp: DPSettings, expected_batch: int, noise_gen: torch.Generator) -> dict:
    """Keyword arguments of both Opacus DP optimizers: noise σ·clip on the clipped sum, divided
    by the expected batch size (the DP-SGD estimator under Poisson sampling)."""
    return {
        "noise_multiplier": dp.noise_multiplier,
        "max_grad_norm": dp.clip,
        "expected_batch_size": expected_batch,
        "loss_reduction": "mean",
        "generator": noise_gen,
    }


def _hooks_mode(model, params, base, dp, expected_batch, noise_gen) -> _DPStepper:  # noqa: ANN001
    """Opacus hooks: materialise per-sample gradients, clip them jointly, sum."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    # Per-sample gradients of a summed loss; the optimizer divides the noisy sum by the expected
    # batch size ("mean"), the standard DP-SGD estimator under Poisson sampling.
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    optimizer = DPOptimizer(base, **_noise_settings(dp, expected_batch, noise_gen))

    def backward(part: Batch) -> float:
        loss = _loss_sum(wrapped, part)
        loss.backward()
        _check_covered(model)
        return loss.item()

    def empty(ps: list[torch.nn.Parameter]) -> None:
        for p in ps:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)

    return _DPStepper(backward, optimizer, wrapped._close, empty)


def _ghost_mode(model, params, base, dp, expected_batch, noise_gen) -> _DPStepper:  # noqa: ANN001
    """Opacus ghost clipping: per-sample gradient norms without materialising the gradients,
    then a second backward pass on the loss reweighted by each example's clipping factor."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    wrapped = GradSampleModuleFastGradientClipping(
        model,
        batch_first=True,
        loss_reduction="mean",
        max_grad_norm=dp.clip,
        use_ghost_clipping=True,
    )
    optimizer = DPOptimizerFastGradientClipping(
        base, **_noise_settings(dp, expected_batch, noise_gen)
    )
    criterion = DPLossFastGradientClipping(
        wrapped, optimizer, nn.CrossEntropyLoss(reduction="mean"), loss_reduction="mean"
    )

    def backward(part: Batch) -> float:
        input_ids, attention_mask, labels = part
        loss = criterion(wrapped(input_ids, attention_mask), labels)
        loss.backward()
        return float(loss.loss_per_sample.detach().sum())

    def empty(ps: list[torch.nn.Parameter]) -> None:
        for p in ps:
            p.grad = torch.zeros_like(p)

    return _DPStepper(backward, optimizer, wrapped._close, empty)


# Clipping modes, both checked against a per-example reference loop in tests/test_engine.py.
# benchmarks/bench_dp.py measured ghost at 1.5x and hooks at 3.8x the time of a non-DP step.
DP_MODES: dict[str, Callable[..., _DPStepper]] = {"ghost": _ghost_mode, "hooks": _hooks_mode}


def train_dp(
    model: nn.Module,
    data: TensorDataset,
    *,
    steps: int,
    dp: DPSettings,
    physical_batch_size: int,
    lr: float,
    generator: torch.Generator,
    optimizer: str = "adamw",
    mode: str = "ghost",
    on_step: Callable[[], None] | None = None,
) -> RoundStats:
    """``steps`` DP-SGD (DP-AdamW by default) steps with Poisson sampling at ``dp.sample_rate``.

    Logical batches larger than ``physical_batch_size`` are processed in pieces whose clipped
    per-sample gradients are summed before the single noisy step, so memory stays bounded while
    the sampling stays exactly Poisson (no gradient accumulation across logical batches).
    """
    from opacus.data_loader import DPDataLoader

    if dp.secure_mode:
        raise PrivacyError(
            "secure_mode needs torchcsprng, which is unmaintained and not installable here; "
            "run without --secure-mode (the ledger records that noise came from torch's PRNG)"
        )
    if mode not in DP_MODES:
        raise PrivacyError(f"unknown clipping mode {mode!r}: choose one of {', '.join(DP_MODES)}")
    n = len(data)
    expected_batch = max(1, round(dp.sample_rate * n))
    params = [p for p in model.parameters() if p.requires_grad]
    seed = int(torch.randint(0, 2**31, (1,), generator=generator))
    sample_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    base = OPTIMIZERS[optimizer](params, lr)
    stepper = DP_MODES[mode](model, params, base, dp, expected_batch, noise_gen)
    dp_optimizer = stepper.optimizer
    try:
        batches = _cycle(
            lambda: DPDataLoader(data, sample_rate=dp.sample_rate, generator=sample_gen)
        )
        total_loss, examples = 0.0, 0
        model.train()
        for _ in range(steps):
            batch = next(batches)
            dp_optimizer.zero_grad(set_to_none=True)
            size = batch[0].shape[0]
            if size == 0:
                # An empty Poisson batch still takes a (pure-noise) step: the accountant counts it.
                stepper.empty(params)
            parts = list(_split(batch, physical_batch_size))
            for index, part in enumerate(parts):
                total_loss += stepper.backward(part)
                if index < len(parts) - 1:
                    # Clip and sum this piece; the noisy step happens after the last piece.
                    dp_optimizer.signal_skip_step(do_skip=True)
                    dp_optimizer.step()
                    dp_optimizer.zero_grad(set_to_none=True)  # keeps the summed clipped gradients
            dp_optimizer.step()
            examples += size
            if on_step is not None:
                on_step()
        return RoundStats(steps=steps, examples=examples, mean_loss=total_loss / max(examples, 1))
    finally:
        stepper.close()
        for p in params:
            p.grad_sample = None
            p.grad = None
            p.summed_grad = None


def _check_covered(model: nn.Module) -> None:
    """Every trainable parameter must have per-sample gradients, or DP does not cover it."""
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and getattr(p, "grad_sample", None) is None
    ]
    if missing:
        raise PrivacyError(
            f"DP-SGD did not compute per-sample gradients for {missing[:3]}: these parameters "
            "would be trained without privacy; freeze them or use a supported layer type"
        )


def _loss_sum(model: nn.Module, batch: Batch) -> torch.Tensor:
    input_ids, attention_mask, labels = batch
    logits = model(input_ids, attention_mask)
    return nn.functional.cross_entropy(logits, labels, reduction="sum")
