"""White-box Dirac gradient canaries trained with secure_fedsa's own DP-SGD engine.

The mechanism under audit is :func:`secure_fedsa.site.training.train_dp` as installed (Opacus
per-sample gradients, joint clipping, Gaussian noise and Poisson sampling from the OS CSPRNG),
run with plain SGD on a linear model whose per-record gradient the auditor controls:

* canary i is the record x = 1000·e_i (label 0): with the weights near zero its gradient is
  −(1 − p)·x, of norm ≈ 500 ≫ clip, so after clipping it is exactly −clip·e_i: a Dirac canary on
  its own coordinate, the worst case for DP-SGD (Steinke et al. 2023, white-box setting);
* background records live on coordinates no canary uses, so they neither help nor hide canaries.

Each canary is put in the training set with probability 1/2. Training replays the audited
client's DP events (σ, q, steps), sampling each record with probability q at every step. The
score of canary i is the final weight on coordinate i: it grows by lr·clip/B at every step the
canary was sampled and otherwise only moves with the noise. ``noise_scale`` multiplies the σ
actually applied (1 = as accounted); tests set it below 1 to plant a bug the audit must catch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

CANARY_NORM = 1000.0
BACKGROUND_DIMS = 16
# Small enough that 1000·w stays far below 1 (the canary gradient keeps norm ≫ clip).
LEARNING_RATE = 1e-6


class DiracModel(nn.Module):
    """Logits (w·x, 0): a linear score against a fixed zero logit."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dims, 1, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        z = self.linear(input_ids)
        return torch.cat([z, torch.zeros_like(z)], dim=-1)


def canary_dataset(
    included: Sequence[bool], background: int, generator: torch.Generator
) -> TensorDataset:
    """Included canaries (one-hot, norm 1000) and background records on separate coordinates."""
    m = len(included)
    dims = m + BACKGROUND_DIMS
    rows = [i for i, keep in enumerate(included) if keep]
    canaries = torch.zeros(len(rows), dims)
    canaries[torch.arange(len(rows)), torch.tensor(rows, dtype=torch.long)] = CANARY_NORM
    noise = torch.randn(background, BACKGROUND_DIMS, generator=generator)
    filler = torch.zeros(background, dims)
    filler[:, m:] = CANARY_NORM * noise / noise.norm(dim=1, keepdim=True)
    features = torch.cat([canaries, filler])
    n = features.shape[0]
    return TensorDataset(
        features, torch.zeros(n, 1, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    )


def train_canaries(
    included: Sequence[bool],
    events: Sequence[tuple[float, float, int]],
    *,
    clip: float,
    noise_scale: float = 1.0,
    background: int = 256,
    physical_batch_size: int = 4096,
    mode: str = "hooks",
    seed: int = 0,
) -> list[float]:
    """Train through ``train_dp`` replaying ``events`` (σ, q, steps); return each canary's score.

    ``seed`` fixes the background records only; noise and sampling come from the OS CSPRNG,
    exactly as in a run."""
    from secure_fedsa.privacy.randomness import OSRandom
    from secure_fedsa.site.training import DPSettings, train_dp

    generator = torch.Generator().manual_seed(seed)
    data = canary_dataset(included, background, generator)
    model = DiracModel(len(included) + BACKGROUND_DIMS)
    for sigma, q, steps in events:
        settings = DPSettings(noise_multiplier=sigma * noise_scale, clip=clip, sample_rate=q)
        train_dp(
            model,
            data,
            steps=steps,
            dp=settings,
            physical_batch_size=physical_batch_size,
            lr=LEARNING_RATE,
            randomness=OSRandom(),
            optimizer="sgd",
            mode=mode,
        )
    weights = model.linear.weight.detach()[0, : len(included)]
    return [float(w) for w in weights]
