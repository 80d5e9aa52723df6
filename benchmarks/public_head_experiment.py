"""Experiment (docs/results.md, "A DP recipe for the default job"): start the task head from
public text instead of at random, and optionally freeze it.

`secure-fedsa run` with the head's rows set to the pretrained encoder's mean-pooled embedding of
one public prompt per label (unit length, times SCALE), bias 0: before any training the model
predicts the label whose prompt is nearest in cosine, a zero-shot classifier that costs no
privacy. HEAD_SCALE multiplies the head's learning rate (0 freezes it: DP noise then never
touches the head). Not a product option: it patches the model builder and the engine's AdamW
factory for this process only, and it knows prompts for Rotten Tomatoes only.

    python benchmarks/public_head_experiment.py 1 --seed 0 --no-encryption --no-masking \
        --out runs/public-head-seed0
"""

from __future__ import annotations

import sys

import torch
from adapter_lr_experiment import grouped_adamw  # this folder, first on sys.path

from secure_fedsa.app.cli import main
from secure_fedsa.model import encoder as model_module
from secure_fedsa.site import training as engine
from secure_fedsa.transports import federation

PROMPTS = ("a bad movie", "a good movie")  # rotten = 0, fresh = 1
SCALE = 5.0


def prompt_embeddings(built: model_module.LoraClassifier, spec: model_module.ModelSpec):  # noqa: ANN201
    """Unit-length mean-pooled embeddings of PROMPTS by ``built``'s encoder, whose adapter is
    still the identity (peft starts B, or VeRA's λ_b, at zero)."""
    batch = model_module.load_tokenizer(spec)(list(PROMPTS), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = built.encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    pooled = model_module.mean_pool(hidden, batch["attention_mask"])
    return torch.nn.functional.normalize(pooled, dim=-1)


def public_head_builder(original):  # noqa: ANN001, ANN201 - wraps model.build_model
    def build(spec, *, num_labels, seed):  # noqa: ANN001, ANN202
        built = original(spec, num_labels=num_labels, seed=seed)
        if num_labels != len(PROMPTS):
            raise SystemExit(f"prompts for {len(PROMPTS)} labels, the data has {num_labels}")
        with torch.no_grad():
            built.head.classifier.weight.copy_(SCALE * prompt_embeddings(built, spec))
            built.head.classifier.bias.zero_()
        return built

    return build


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    engine.OPTIMIZERS["adamw"] = grouped_adamw(1.0, float(sys.argv[1]))
    model_module.build_model = public_head_builder(model_module.build_model)
    federation.build_model = model_module.build_model  # imported by name there
    sys.exit(main(["run", *sys.argv[2:]]))
