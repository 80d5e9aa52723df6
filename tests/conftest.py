"""Shared fixtures: the real pretrained encoder cut to one layer, real data, small sizes."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    from secure_fedsa.model import ModelSpec, load_tokenizer

    return load_tokenizer(ModelSpec())


@pytest.fixture
def tiny_model():
    """all-MiniLM-L6-v2 with only pretrained layer 0, LoRA r=8 on query/value, 2 labels."""
    from secure_fedsa.model import ModelSpec, build_model

    return build_model(ModelSpec(num_layers=1), num_labels=2, seed=0)
