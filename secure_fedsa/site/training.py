"""One client's local training for one round: DP-SGD with Opacus, or plain training.

DP covers every trainable parameter jointly (A, B and head): per-sample gradients of the whole
trainable set are clipped together to norm ``clip``, Gaussian noise of std ``sigma * clip`` is
added to their sum, and batches are Poisson-sampled with rate ``q = batch_size / n``, which is what
the accountant assumes. Each call wraps the model with Opacus hooks and removes them afterwards, so
one model object can serve several clients in turn.

The noise and the Poisson sampling come from a
:class:`~secure_fedsa.privacy.randomness.RandomSource`
(the OS CSPRNG in every run; see that module), never from a seeded generator. Before the first
noisy step of a round, :func:`~secure_fedsa.privacy.hazards.check_mechanism` is fed what this
function actually built (the sampler, the optimizer's batch normalisation, the parameters that
received per-sample gradients in the first backward pass) and stops the round on any hazard.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy import opacus_compat
from secure_fedsa.privacy.accounting import DPEvent
from secure_fedsa.privacy.canaries import CanaryGradients
from secure_fedsa.privacy.hazards import check_mechanism
from secure_fedsa.privacy.randomness import RandomSource, gaussian, poisson_indices

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Opacus' hooks fire on a frozen embedding input; harmless, and noisy on every step.
warnings.filterwarnings("ignore", message="Full backward hook is firing")

# Local optimizers by name. AdamW is the default; plain SGD makes an update equal to -lr * the
# (noisy, clipped) gradient, which the zero-noise equivalence tests rely on.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


@dataclass
class OptimizerCarry:
    """A client's local optimizer state carried from one round to the next.

    ``saved`` is the optimizer's ``state_dict()`` at the end of the last round (None: the next
    round starts a fresh optimizer). Training loads it before its first step and replaces it
    after its last, and only then: a round that fails keeps the state it started with. The
    moments are computed from the (noisy, clipped) gradients, so under DP they are
    post-processing of what DP already protects, like the model itself.
    """

    saved: dict | None = None


def _resume(opt: torch.optim.Optimizer, carry: OptimizerCarry | None, lr: float) -> None:
    if carry is None or carry.saved is None:
        return
    opt.load_state_dict(copy.deepcopy(carry.saved))  # torch would share its tensors
    for group in opt.param_groups:  # the run's lr, whatever the saved state says
        group["lr"] = lr


def _factors(lr_factors: Sequence[float] | None, steps: int) -> list[float]:
    """The per-step lr factors of a round (all 1 without a schedule); checked before training."""
    if lr_factors is None:
        return [1.0] * steps
    factors = [float(f) for f in lr_factors]
    if len(factors) != steps or not all(0.0 < f <= 1.0 for f in factors):
        raise ValueError(f"need {steps} lr factors in (0, 1], got {factors}")
    return factors


def _scheduler(opt: torch.optim.Optimizer) -> Callable[[float], None]:
    """Sets every parameter group's lr to the lr it has now times a factor."""
    base = [group["lr"] for group in opt.param_groups]

    def scale(factor: float) -> None:
        for group, lr in zip(opt.param_groups, base, strict=True):
            group["lr"] = lr * factor

    return scale


def _keep(opt: torch.optim.Optimizer, carry: OptimizerCarry | None) -> None:
    if carry is not None:
        carry.saved = opt.state_dict()


@dataclass(frozen=True)
class DPSettings:
    """Per-round DP-SGD parameters. ``sample_rate`` is the Poisson rate the accountant uses."""

    noise_multiplier: float
    clip: float
    sample_rate: float

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


@dataclass(frozen=True)
class DPRound:
    """What one call of :func:`train_dp` did: its statistics (private: the loss and the batch
    sizes are not DP) and the DP event it executed, read from the mechanism that ran (the noise
    multiplier of the optimizer that added the noise, the rate of the sampler that drew the
    batches, the noisy steps taken). The ledger is charged exactly ``event``; None only when no
    step ran."""

    stats: RoundStats
    event: DPEvent | None
    # with canaries: per canary, the sum over the round's steps of the noisy clipped gradient sum
    # on its coordinate, in units of the clip (private to the client, for the audit only)
    canary_sums: tuple[float, ...] | None = None


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
    carry: OptimizerCarry | None = None,
    lr_factors: Sequence[float] | None = None,
) -> RoundStats:
    """``steps`` optimizer steps on shuffled batches. No privacy. With ``carry``, the optimizer
    starts from ``carry.saved`` and leaves its final state there. Step ``i`` runs at
    ``lr * lr_factors[i]`` (``lr`` throughout without factors)."""
    factors = _factors(lr_factors, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr)
    _resume(opt, carry, lr)
    sampler_gen = torch.Generator().manual_seed(
        int(torch.randint(0, 2**31, (1,), generator=generator))
    )

    def loader() -> DataLoader:
        sampler = RandomSampler(data, generator=sampler_gen)
        return DataLoader(data, batch_size=batch_size, sampler=sampler)

    batches = _cycle(loader)
    total_loss, examples = 0.0, 0
    model.train()
    schedule = _scheduler(opt)
    for factor in factors:
        schedule(factor)
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
    _keep(opt, carry)
    return RoundStats(steps=steps, examples=examples, mean_loss=total_loss / max(examples, 1))


class PoissonSampler:
    """Poisson sampling: every record joins a batch independently with probability ``rate``,
    which is what the accountant assumes. Draws come from ``source`` (the OS CSPRNG)."""

    poisson = True

    def __init__(self, size: int, rate: float, source: RandomSource) -> None:
        self.size = size
        self.rate = rate
        self.source = source

    def draw(self) -> torch.Tensor:
        return poisson_indices(self.source, self.size, self.rate)


def _add_secure_noise(optimizer, source: RandomSource) -> None:  # noqa: ANN001
    """Opacus' ``add_noise`` with the noise drawn from ``source`` instead of torch's PRNG."""
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    for p in optimizer.params:
        opacus_compat.check_not_processed(p.summed_grad)
        noise = gaussian(source, p.summed_grad.shape, std, dtype=p.summed_grad.dtype)
        p.grad = (p.summed_grad + noise).view_as(p)
        opacus_compat.mark_processed(p.summed_grad)


def _with_secure_noise(base: type, source: RandomSource, **kwargs) -> torch.optim.Optimizer:  # noqa: ANN003
    """An instance of the Opacus optimizer class ``base`` whose noise comes from ``source``."""

    class SecureNoise(base):  # type: ignore[misc, valid-type]
        def add_noise(self) -> None:
            _add_secure_noise(self, source)

    SecureNoise.__name__ = f"SecureNoise{base.__name__}"
    return SecureNoise(**kwargs)


@dataclass
class _DPStepper:
    """How one clipping mode computes clipped per-sample gradients of a batch piece."""

    backward: Callable[[Batch], float]  # forward + backward of one piece; returns summed loss
    optimizer: torch.optim.Optimizer  # an Opacus DP optimizer (adds noise at the real step)
    close: Callable[[], None]
    empty: Callable[[list[torch.nn.Parameter]], None]  # prepare a step on an empty batch
    # append per-sample gradient rows (one tensor per parameter) to the last piece's, before
    # they are clipped; None where the mode has no per-sample gradients to append to
    add_rows: Callable[[list[torch.nn.Parameter], list[torch.Tensor]], None] | None = None


# The most canary rows clipped at once (memory: rows × trainable values × 4 bytes).
CANARY_PIECE = 1024

# Called with the names of the trainable parameters that got per-sample gradients (or, with
# ghost clipping, per-sample norms) for a piece, before anything of it is clipped or applied;
# raises PrivacyError if that is not all of them.
CoverageCheck = Callable[[list[str]], None]


def _with_rows(model: nn.Module, attribute: str, rows: int) -> list[str]:
    """Trainable parameters whose ``attribute`` is a tensor with ``rows`` per-sample rows."""
    return [
        name
        for name, p in _trainable(model)
        if isinstance(getattr(p, attribute, None), torch.Tensor)
        and getattr(p, attribute).shape[0] == rows
    ]


def _noise_settings(dp: DPSettings, expected_batch: int) -> dict:
    """Keyword arguments of both Opacus DP optimizers: noise σ·clip on the clipped sum, divided
    by the expected batch size (the DP-SGD estimator under Poisson sampling)."""
    return {
        "noise_multiplier": dp.noise_multiplier,
        "max_grad_norm": dp.clip,
        "expected_batch_size": expected_batch,
        "loss_reduction": "mean",
    }


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _hooks_mode(model, params, base, dp, expected_batch, source, check) -> _DPStepper:  # noqa: ANN001
    """Opacus hooks: materialise per-sample gradients, clip them jointly, sum."""
    GradSampleModule, DPOptimizer = opacus_compat.hooks_classes()

    # Per-sample gradients of a summed loss; the optimizer divides the noisy sum by the expected
    # batch size ("mean"), the standard DP-SGD estimator under Poisson sampling.
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    optimizer = _with_secure_noise(
        DPOptimizer, source, optimizer=base, **_noise_settings(dp, expected_batch)
    )

    def backward(part: Batch) -> float:
        loss = _loss_sum(wrapped, part)
        loss.backward()
        check(_with_rows(model, "grad_sample", part[0].shape[0]))
        return loss.item()

    def empty(ps: list[torch.nn.Parameter]) -> None:
        for p in ps:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)

    def add_rows(ps: list[torch.nn.Parameter], rows: list[torch.Tensor]) -> None:
        for p, extra in zip(ps, rows, strict=True):
            p.grad_sample = torch.cat([p.grad_sample, extra.to(p.grad_sample.dtype)])

    close = functools.partial(opacus_compat.close_hooks, wrapped)
    return _DPStepper(backward, optimizer, close, empty, add_rows)


def _ghost_mode(model, params, base, dp, expected_batch, source, check) -> _DPStepper:  # noqa: ANN001
    """Opacus ghost clipping: per-sample gradient norms without materialising the gradients,
    then a second backward pass on the loss reweighted by each example's clipping factor."""
    (
        GradSampleModuleFastGradientClipping,
        DPOptimizerFastGradientClipping,
        DPLossFastGradientClipping,
    ) = opacus_compat.ghost_classes()

    wrapped = GradSampleModuleFastGradientClipping(
        model,
        batch_first=True,
        loss_reduction="mean",
        max_grad_norm=dp.clip,
        use_ghost_clipping=True,
    )
    optimizer = _with_secure_noise(
        DPOptimizerFastGradientClipping,
        source,
        optimizer=base,
        **_noise_settings(dp, expected_batch),
    )
    criterion = DPLossFastGradientClipping(
        wrapped, optimizer, nn.CrossEntropyLoss(reduction="mean"), loss_reduction="mean"
    )
    rows = [0]
    norm_sample = wrapped.get_norm_sample

    def checked_norm_sample() -> torch.Tensor:
        # Opacus calls this between the two backward passes, before clipping anything.
        check(_with_rows(model, "_norm_sample", rows[0]))
        return norm_sample()

    wrapped.get_norm_sample = checked_norm_sample

    def backward(part: Batch) -> float:
        input_ids, attention_mask, labels = part
        for p in params:  # no stale norms from an earlier piece: coverage is read from this one
            p._norm_sample = None
        rows[0] = input_ids.shape[0]
        loss = criterion(wrapped(input_ids, attention_mask), labels)
        loss.backward()
        return float(loss.loss_per_sample.detach().sum())

    def empty(ps: list[torch.nn.Parameter]) -> None:
        for p in ps:
            p.grad = torch.zeros_like(p)

    close = functools.partial(opacus_compat.close_hooks, wrapped)
    return _DPStepper(backward, optimizer, close, empty)


# Clipping modes, both checked against a per-example reference loop in tests/test_engine.py.
DP_MODES: dict[str, Callable[..., _DPStepper]] = {"ghost": _ghost_mode, "hooks": _hooks_mode}


def _refuse_hazards(hazards: list) -> None:  # noqa: ANN001
    errors = [h for h in hazards if h.severity == "error"]
    if errors:
        raise PrivacyError(f"{errors[0].code}: {errors[0].message}")


def train_dp(
    model: nn.Module,
    data: TensorDataset,
    *,
    steps: int,
    dp: DPSettings,
    physical_batch_size: int,
    lr: float,
    randomness: RandomSource,
    optimizer: str = "adamw",
    mode: str = "hooks",
    on_step: Callable[[], None] | None = None,
    sampler: PoissonSampler | None = None,
    carry: OptimizerCarry | None = None,
    lr_factors: Sequence[float] | None = None,
    canaries: CanaryGradients | None = None,
) -> DPRound:
    """``steps`` DP-SGD (DP-AdamW by default) steps with Poisson sampling at ``dp.sample_rate``.

    Noise and sampling come from ``randomness`` (pass :class:`OSRandom` outside tests). Logical
    batches larger than ``physical_batch_size`` are processed in pieces whose clipped per-sample
    gradients are summed before the single noisy step, so memory stays bounded while the
    sampling stays exactly Poisson (no gradient accumulation across logical batches).

    Before the first noisy step the mechanism's hazards are checked with what was built and
    observed; on any, :class:`PrivacyError` is raised and no parameter has changed. With
    ``carry``, the optimizer starts from ``carry.saved`` and leaves its final state there. Step
    ``i`` runs at ``lr * lr_factors[i]`` (``lr`` throughout without factors); the factors are
    public (a function of the step's position), so the schedule is post-processing.

    With ``canaries`` (the run-level audit, :mod:`secure_fedsa.privacy.canaries`), the sampler
    draws from the n records and the canaries together; each sampled canary's gradient row joins
    the last piece's per-sample gradients before clipping, so it is clipped, summed and noised
    with the records. The noisy sum is still divided by the records' expected batch q·n. After
    each step the noisy gradient the optimizer consumed is read on the canary coordinates and
    multiplied back by q·n and divided by the clip: the mechanism's own output there (a canary
    sampled in a step adds its sign, the noise N(0, σ²)); their sum over the round's steps is
    :attr:`DPRound.canary_sums`.

    Returns the statistics and the DP event executed (:class:`DPRound`): what to charge.
    """
    if mode not in DP_MODES:
        raise PrivacyError(f"unknown clipping mode {mode!r}: choose one of {', '.join(DP_MODES)}")
    factors = _factors(lr_factors, steps)
    n = len(data)
    extra = 0 if canaries is None else canaries.count
    sampler = (
        sampler if sampler is not None else PoissonSampler(n + extra, dp.sample_rate, randomness)
    )
    expected_batch = max(1, round(dp.sample_rate * n))
    named = _trainable(model)
    params = [p for _, p in named]
    if canaries is not None:
        if mode != "hooks":
            raise PrivacyError("canaries need clipping mode 'hooks' (per-sample gradients)")
        if getattr(sampler, "size", None) != n + extra:
            raise PrivacyError("with canaries the sampler must draw from the records and canaries")
        canaries.check_trainable(params)
    base = OPTIMIZERS[optimizer](params, lr)
    _resume(base, carry, lr)
    built: list[torch.optim.Optimizer] = []

    def hazards(covered: list[str] | None) -> list:  # noqa: ANN202
        return check_mechanism(
            dataset_size=n,
            accountant_rate=dp.sample_rate,
            sampler_rate=float(getattr(sampler, "rate", float("nan"))),
            poisson=bool(getattr(sampler, "poisson", False)),
            optimizer_expected_batch=built[0].expected_batch_size,
            trainable_names=[name for name, _ in named],
            covered_names=covered,
        )

    def check_covered(covered: list[str]) -> None:
        _refuse_hazards(hazards(covered))

    stepper = DP_MODES[mode](model, params, base, dp, expected_batch, randomness, check_covered)
    dp_optimizer = stepper.optimizer
    built.append(dp_optimizer)
    try:
        _refuse_hazards(hazards(None))
        total_loss, examples, executed = 0.0, 0, 0
        sums = None if canaries is None else canaries.accumulator(params)
        model.train()
        schedule = _scheduler(base)
        for factor in factors:
            schedule(factor)
            index = sampler.draw()
            chosen = index[index >= n] - n  # sampled canaries (none without canaries)
            index = index[index < n]
            batch: Batch = tuple(t[index] for t in data.tensors)  # type: ignore[assignment]
            dp_optimizer.zero_grad(set_to_none=True)
            size = batch[0].shape[0]
            if size == 0:
                # An empty Poisson batch still takes a (pure-noise) step: the accountant counts it.
                stepper.empty(params)
            parts = list(_split(batch, physical_batch_size))
            for number, part in enumerate(parts):
                # checks, before clipping, that every trainable parameter got per-sample
                # gradients in this piece (else DP does not cover it)
                total_loss += stepper.backward(part)
                if number < len(parts) - 1:
                    # Clip and sum this piece; the noisy step happens after the last piece.
                    dp_optimizer.signal_skip_step(do_skip=True)
                    dp_optimizer.step()
                    dp_optimizer.zero_grad(set_to_none=True)  # keeps the summed clipped gradients
            if canaries is not None and stepper.add_rows is not None:
                # The sampled canaries' rows are clipped and summed in pieces (each row holds
                # every trainable value); the first joins the records' last piece.
                for number, piece in enumerate(torch.split(chosen, CANARY_PIECE)):
                    if number:
                        dp_optimizer.signal_skip_step(do_skip=True)
                        dp_optimizer.step()
                        dp_optimizer.zero_grad(set_to_none=True)
                        stepper.empty(params)
                    stepper.add_rows(params, canaries.rows(params, piece))
            dp_optimizer.step()
            if sums is not None:  # the noisy sum that step released, back in units of the clip
                sums.add(dp_optimizer.expected_batch_size / dp.clip)
            executed += 1
            examples += size
            if on_step is not None:
                on_step()
        _keep(base, carry)
        event = (
            DPEvent(
                noise_multiplier=dp_optimizer.noise_multiplier,
                sample_rate=float(sampler.rate),
                steps=executed,
            )
            if executed
            else None
        )
        mean_loss = total_loss / max(examples, 1)
        stats = RoundStats(steps=executed, examples=examples, mean_loss=mean_loss)
        noisy = None if sums is None else sums.values()
        return DPRound(stats=stats, event=event, canary_sums=noisy)
    finally:
        stepper.close()
        for p in params:
            p.grad_sample = None
            p.grad = None
            p.summed_grad = None
            p._norm_sample = None


def _loss_sum(model: nn.Module, batch: Batch) -> torch.Tensor:
    input_ids, attention_mask, labels = batch
    logits = model(input_ids, attention_mask)
    return nn.functional.cross_entropy(logits, labels, reduction="sum")
