"""The option table (issue 32): every run option is declared once, as RunConfig field metadata,
and reaches every transport: `secure-fedsa run`, `secure-fedsa sweep`, a Flower run config and
pyproject.toml's [tool.flwr.app.config]; or its metadata says why not."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import tomli as tomllib

from secure_fedsa import options
from secure_fedsa.app.cli import build_parser
from secure_fedsa.config import RunConfig, flag
from secure_fedsa.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]

# A value for every run option other than its default (accountant has one choice only), and the
# other fields it needs to be valid. A new option without a sample here fails the test below.
SAMPLES: dict[str, tuple[object, dict[str, object]]] = {
    "method": ("fedit", {}),
    "head": ("shared", {}),
    "adapter": ("vera", {}),
    "rounds": (7, {}),
    "local_steps": (3, {}),
    "num_clients": (4, {}),
    "clients_per_round": (2, {}),
    "finish_steps": (2, {}),
    "seed": (5, {}),
    "dataset": ("tweets", {}),
    "data_files": (("a.csv", "b.csv"), {}),
    "text_column": ("review", {}),
    "label_column": ("sentiment", {}),
    "client_column": ("site", {}),
    "labels": (("neg", "pos"), {}),
    "partition": ("iid", {}),
    "alpha": (0.25, {}),
    "test_fraction": (0.1, {}),
    "max_examples": (300, {}),
    "client_sizes": ("lognormal", {"test_examples": 100}),
    "size_sigma": (0.5, {}),
    "min_train_examples": (60, {}),
    "max_train_examples": (500, {}),
    "test_examples": (100, {}),
    "validation_fraction": (0.1, {}),
    "model": ("encoders/mini", {}),
    "num_layers": (3, {}),
    "lora_r": (4, {}),
    "lora_alpha": (8, {}),
    "vera_r": (128, {}),
    "target_modules": (("q_lin", "v_lin"), {}),
    "adapter_layers": (None, {}),  # --adapter-layers all; adapter-layers = 0
    "max_length": (32, {}),
    "batch_size": (128, {}),
    "physical_batch_size": (32, {}),
    "lr": (1e-3, {}),
    "optimizer_state": ("kept", {}),
    "lr_schedule": ("cosine", {}),
    "eval_examples_per_round": (50, {}),
    "dp": (False, {}),
    "epsilon": (3.0, {}),
    "delta": (1e-6, {}),
    "noise_multiplier": (1.5, {}),
    "clip": (1.0, {}),
    "accountant": ("pld", {}),
    "clipping": ("ghost", {}),
    "canaries": (50, {}),
    "encryption": (False, {}),
    "masking": (False, {}),
    "masking_threshold": (2, {"num_clients": 2}),
    "keys_dir": ("keys", {}),
    "max_clients": (32, {}),
    "release_evaluation": (True, {}),
}
# RunConfig fields that are no run option, and run options a Flower run config does not set:
# each says why in its metadata; a new exemption is a decision, made here too
NOT_OPTIONS = {"version"}
NOT_IN_FLOWER = {"data_files", "keys_dir"}


def _by_name() -> dict[str, options.RunOption]:
    return {o.name: o for o in options.run_options()}


def _words(name: str, value: object) -> list[str]:
    """The command-line words that set field ``name`` to ``value``."""
    option = _by_name()[name]
    if option.kind == "bool":
        assert value != option.default
        return [option.flag]
    if option.kind == "list":
        return [option.flag, *value] if option.details.words else [option.flag, ",".join(value)]
    if value is None:
        return [option.flag, option.details.none_word]
    return [option.flag, str(value)]


def _run_config(name: str, value: object) -> dict[str, object]:
    """The Flower run-config entry that sets field ``name`` to ``value``."""
    option = _by_name()[name]
    if option.kind == "list":
        return {option.key: ",".join(value)}
    if value is None:
        return {option.key: "" if option.kind == "str" else 0}
    return {option.key: value}


def _app_config() -> dict:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["tool"]["flwr"]["app"]["config"]


def test_every_field_is_an_option_or_says_why_not():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    names = [o.name for o in options.run_options()]
    assert set(names) | set(options.internal_fields()) == fields
    assert set(options.internal_fields()) == NOT_OPTIONS
    assert all(why.strip() for why in options.internal_fields().values())
    assert set(SAMPLES) == set(names), "give every new option a sample value"
    for option in options.run_options():
        assert option.details.help or option.details.choices, option.name
        assert not option.optional or option.details.none_means, option.name
    flags = [o.flag for o in options.run_options()]
    keys = [o.key for o in options.run_options() if o.key is not None]
    assert len(set(flags)) == len(flags) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_option_reaches_every_transport(name):
    from secure_fedsa.app.sweep.command import VARIED
    from secure_fedsa.transports.flower.protocol import Deployment

    value, context = SAMPLES[name]
    option = _by_name()[name]
    assert value != option.default or len(option.details.choices) == 1
    words = [w for field, v in context.items() for w in _words(field, v)] + _words(name, value)
    # secure-fedsa run
    parser = build_parser()
    args = parser.parse_args(["run", *words])
    assert options.explicit_values(args)[name] == (option.flag, value)
    assert getattr(options.config_from_args(args), name) == value
    # secure-fedsa sweep, which sets method, seed and the budget per cell
    if option.dest not in VARIED:
        args = parser.parse_args(["sweep", *words])
        assert getattr(options.config_from_args(args), name) == value
    # a Flower run config, and pyproject's app config
    if option.key is None:
        assert name in NOT_IN_FLOWER and option.details.not_in_flower.strip()
        return
    assert name not in NOT_IN_FLOWER
    run_config = {k: v for field, v in context.items() for k, v in _run_config(field, v).items()}
    deployment = Deployment.from_run_config({**run_config, **_run_config(name, value)})
    assert getattr(deployment.config, name) == value
    assert option.key in _app_config()


def test_the_app_config_holds_every_option_at_its_default():
    from secure_fedsa.transports.flower.protocol import DEPLOYMENT_OPTIONS, RUN_KEYS

    config = _app_config()
    assert set(config) == set(RUN_KEYS) | set(DEPLOYMENT_OPTIONS)
    assert set(RUN_KEYS.values()) == set(SAMPLES) - NOT_IN_FLOWER
    assert options.flower_values(config) == {
        o.name: o.default for o in options.run_options() if o.key is not None
    }


def test_a_flower_error_names_the_run_config_key():
    from secure_fedsa.transports.flower.protocol import Deployment

    assert flag("dp") == "--no-dp" and flag("num_clients") == "--clients"
    with pytest.raises(ConfigError, match=r"^epsilon must be .* \(use dp=false for no privacy\)$"):
        Deployment.from_run_config({"epsilon": -1.0})
    with pytest.raises(ConfigError, match="needs test-examples N"):
        Deployment.from_run_config({"client-sizes": "lognormal"})
    with pytest.raises(ConfigError, match="comma-separated"):
        Deployment.from_run_config({"target-modules": 3})
    with pytest.raises(ConfigError, match="--epsilon must be"):
        RunConfig(epsilon=-1.0)


def test_the_help_lists_every_option_with_its_default():
    from secure_fedsa.app.sweep.command import VARIED

    parser = build_parser()
    for command in ("sweep", "run"):
        sub = parser._subparsers._group_actions[0].choices[command]
        text = " ".join(sub.format_help().split())
        for option in options.run_options():
            if command == "run" or option.dest not in VARIED:
                assert option.flag in text, (command, option.flag)
    assert "--adapter-layers ADAPTER_LAYERS adapt only the top N encoder layers, or all" in text
    assert "(default: 2)" in text and "(default: query,value)" in text


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return found


def test_the_package_has_no_import_cycle():
    """No module imports one that imports it back, directly or not, even inside a function
    (cli and sweep.command did: the option table now lives in secure_fedsa.options)."""
    root = REPO / "secure_fedsa"
    paths = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}
    assert "secure_fedsa.options" in graph["secure_fedsa.app.sweep.command"]
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = trail[trail.index(name) :] + [name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
