"""The run options, from their one declaration to every transport.

Each run option is declared once, as the metadata of its :class:`~secure_fedsa.config.RunConfig`
field (:class:`~secure_fedsa.config.Option`). From that table this module makes

- the command line's options (:func:`add_run_options`, used by ``secure-fedsa run`` and
  ``secure-fedsa sweep``), the configuration they give (:func:`config_from_args`) and the check of
  a resumed run's flags against its stored configuration (:func:`resumed_config`);
- the Flower run-config keys and their conversion (:func:`flower_options`,
  :func:`flower_values`), and the flags of an error message rewritten into those keys
  (:func:`flower_words`);
- the run options' lines of pyproject.toml's ``[tool.flwr.app.config]``
  (:func:`flower_toml_lines`; secure_fedsa.transports.flower.protocol adds the deployment's own
  options and writes the block).

Importing this module imports neither torch nor numpy (``secure-fedsa --help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secure_fedsa.config import NOT_AN_OPTION, OPTION, Option, RunConfig, flag
from secure_fedsa.errors import ConfigError

# a field's annotation -> its kind (optional when the annotation ends in "| None")
_KINDS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "tuple[str, ...]": "list"}
# the pyproject.toml comments' width (ruff's line length, less the "# ")
_COMMENT_WIDTH = 98


@dataclass(frozen=True)
class RunOption:
    """One run option: its RunConfig field, its declared details and what follows from them."""

    name: str  # the RunConfig field
    default: Any
    details: Option
    kind: str  # int, float, str, bool or list (of str)
    optional: bool  # the field may be None

    @property
    def flag(self) -> str:
        return flag(self.name)

    @property
    def dest(self) -> str:
        """The argparse destination: the field, or a switch's own name (``no_dp``)."""
        return self.flag[2:].replace("-", "_") if self.kind == "bool" else self.name

    @property
    def key(self) -> str | None:
        """The Flower run-config key, or None where a run config does not set it."""
        if self.details.not_in_flower:
            return None
        if self.details.key:
            return self.details.key
        return self.name.replace("_", "-") if self.kind == "bool" else self.flag[2:]


@functools.cache
def run_options() -> tuple[RunOption, ...]:
    """Every run option, in RunConfig's order."""
    options = []
    for f in dataclasses.fields(RunConfig):
        details = f.metadata.get(OPTION)
        if details is None:
            if not f.metadata.get(NOT_AN_OPTION):
                raise TypeError(f"RunConfig.{f.name} is neither an option nor says why not")
            continue
        annotation = str(f.type)
        optional = annotation.endswith(" | None")
        kind = _KINDS.get(annotation.removesuffix(" | None"))
        if kind is None:
            raise TypeError(f"RunConfig.{f.name}: no option kind for {annotation!r}")
        options.append(RunOption(f.name, f.default, details, kind, optional))
    return tuple(options)


def internal_fields() -> dict[str, str]:
    """RunConfig fields that are not run options, with why."""
    return {
        f.name: f.metadata[NOT_AN_OPTION]
        for f in dataclasses.fields(RunConfig)
        if NOT_AN_OPTION in f.metadata
    }


def _named(text: str, spelling: Mapping[str, str]) -> str:
    """A help text with each ``{field}`` written as this transport spells that option."""
    return text.format_map(spelling)


def _joined(text: str) -> str:
    """A help text after its choices: ``(...)`` as it is, other text after a colon."""
    if not text:
        return ""
    return f" {text}" if text.startswith("(") else f": {text}"


# -- the command line -----------------------------------------------------------------------
def cli_help(option: RunOption) -> str:
    """The option's ``--help`` line (argparse's: a % is written %%)."""
    return _cli_text(option).replace("%", "%%")


def _cli_text(option: RunOption) -> str:
    spelling = {o.name: o.flag for o in run_options()}
    details = option.details
    text = _named(details.help, spelling)
    if details.choices:
        text = f"one of {', '.join(details.choices)}" + _joined(text)
    if option.kind == "bool":
        return f"turn {text} OFF" if option.default else text
    if details.none_word:
        text += f", or {details.none_word}"
    if option.default is None:
        shown = _named(details.none_means, spelling)
    elif option.kind == "list":
        shown = ",".join(option.default)
    else:
        shown = str(option.default)
    return f"{text} (default: {shown})" if shown else text


def _positive_or(word: str):  # noqa: ANN202 - an argparse type
    """A positive integer, or ``word`` (which stands for None)."""

    def parse(text: str) -> int | str:
        if text.strip().lower() == word:
            return word
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer or {word!r}, got {text!r}"
            )
        return value

    return parse


_TYPES = {"int": int, "float": float, "str": str}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Every run option as a flag of ``parser`` (each defaults to None: not given), and the
    run's own --out, --resume and --quiet."""
    for option in run_options():
        text = cli_help(option)
        if option.kind == "bool":
            parser.add_argument(option.flag, dest=option.dest, action="store_true", help=text)
        elif option.kind == "list":
            nargs = "+" if option.details.words else None
            parser.add_argument(option.flag, dest=option.dest, nargs=nargs, help=text)
        else:
            word = option.details.none_word
            kind = _positive_or(word) if word else _TYPES[option.kind]
            bare = option.details.bare
            extra = {} if bare is None else {"nargs": "?", "const": bare}
            parser.add_argument(
                option.flag, dest=option.dest, type=kind, default=None, help=text, **extra
            )
    parser.add_argument("--out", help="run directory (default: runs/<time>-<method>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def explicit_values(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """Config field -> (flag, value) for every run option given on the command line."""
    given: dict[str, tuple[str, Any]] = {}
    for option in run_options():
        raw = getattr(args, option.dest, None)
        if option.kind == "bool":
            if raw:
                given[option.name] = (option.flag, not option.default)
        elif option.kind == "list":
            if raw:
                value = tuple(raw) if option.details.words else _comma_list(raw)
                given[option.name] = (option.flag, value)
        elif raw is not None:
            none_word = option.details.none_word
            given[option.name] = (option.flag, None if none_word and raw == none_word else raw)
    return given


def _too_many_adapter_layers(requested: int, layers: int, where: str) -> ConfigError:
    return ConfigError(
        f"--adapter-layers {requested} is more than the {layers} encoder "
        f"layer{'s' if layers != 1 else ''} {where}: use --adapter-layers {layers} or less, or "
        "all"
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The configuration the command line gives: RunConfig's defaults, the options given, and
    what they imply (``--noise-multiplier`` alone: no ``--epsilon``; ``--no-dp``: neither;
    ``--no-encryption``: no masking)."""
    values = {name: value for name, (_, value) in explicit_values(args).items()}
    requested, layers = values.get("adapter_layers"), values.get("num_layers")
    if requested is not None and layers is not None and requested > layers:
        # refused rather than cut: a configuration that says 2 adapted layers means 2
        raise _too_many_adapter_layers(requested, layers, f"that --num-layers {layers} keeps")
    if "noise_multiplier" in values and "epsilon" not in values:
        values["epsilon"] = None
    if values.get("dp") is False:
        values.update(epsilon=None, noise_multiplier=None)
    if values.get("encryption") is False:
        values["masking"] = False
    return RunConfig(**values)


def fit_layers(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` checked against the encoder's depth (read from its config.json), before
    anything is written: more ``--num-layers`` than the encoder has, or an explicit
    ``--adapter-layers`` above the layers it keeps, is refused; the default adapter count on a
    shallower encoder becomes that encoder's depth, so that config.json says what was used."""
    from secure_fedsa.model.encoder import ModelSpec, encoder_layers

    layers = encoder_layers(ModelSpec(path=config.model, num_layers=config.num_layers))
    if layers is None or config.adapter_layers is None or config.adapter_layers <= layers:
        return config
    if isinstance(args.adapter_layers, int):
        raise _too_many_adapter_layers(args.adapter_layers, layers, "the model has")
    return config.replace(adapter_layers=layers)


def resumed_config(stored: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The configuration to resume with: the stored one, with more rounds if ``--rounds`` asks.

    Any other run option that disagrees with the stored configuration is an error naming it: a
    resumed run continues exactly as configured (its budget lives in the clients' ledgers).
    """
    if args.out:
        raise ConfigError("--out cannot be combined with --resume: the run continues in RUN_DIR")
    given = explicit_values(args)
    for name, (option_flag, value) in given.items():
        if name != "rounds" and getattr(stored, name) != value:
            shown = "" if isinstance(value, bool) else f" {value}"
            raise ConfigError(
                f"{option_flag}{shown} conflicts with the run's stored configuration ({name} = "
                f"{getattr(stored, name)!r} in config.json): --resume continues a run exactly as "
                "it was configured; only --rounds may extend it (within the privacy budget)"
            )
    if "rounds" in given:
        return stored.replace(rounds=given["rounds"][1])
    return stored


# -- a Flower run config --------------------------------------------------------------------
def flower_options() -> dict[str, RunOption]:
    """Run-config key -> run option, for every option a Flower run config sets."""
    return {o.key: o for o in run_options() if o.key is not None}


def convert(key: str, value: Any, kind: str) -> Any:
    """A run-config value (TOML: bool, int, float or str) as a field of ``kind`` holds it."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"run config {key} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"run config {key} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"run config {key} must be a number, got {value!r}")
        return float(value)
    if kind == "list":
        if not isinstance(value, str):
            raise ConfigError(f'run config {key} must be a comma-separated string ("a,b")')
        return _comma_list(value)
    return str(value)


def flower_values(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """RunConfig field -> value for every run option ``run_config`` sets (other keys are not
    looked at). An optional option's 0 or "" is None."""
    values = {}
    for key, option in flower_options().items():
        if key not in run_config:
            continue
        value = run_config[key]
        if option.optional and value in (0, "", None):
            values[option.name] = None
        else:
            values[option.name] = convert(key, value, option.kind)
    return values


def flower_words(message: str) -> str:
    """``message`` with each option's flag written as its run-config key (``--no-dp``:
    ``dp=false``), for a Flower deployment's errors."""
    words = {}
    for option in run_options():
        if option.key is not None:
            switched = "false" if option.default else "true"
            words[option.flag] = f"{option.key}={switched}" if option.kind == "bool" else option.key
    return re.sub(r"--[a-z][a-z-]*", lambda m: words.get(m.group(0), m.group(0)), message)


def _unset(option: RunOption) -> Any:
    """How a run config says None (TOML has no null): 0 for a number, "" for text."""
    return {"int": 0, "float": 0.0}.get(option.kind, "")


def flower_default(option: RunOption) -> Any:
    """The option's default as a run config writes it."""
    if option.default is None:
        return _unset(option)
    if option.kind == "list":
        return ",".join(option.default)
    return option.default


def flower_comment(option: RunOption) -> str:
    """The option's comment in pyproject.toml's [tool.flwr.app.config]."""
    spelling = {o.name: o.key or o.flag for o in run_options()}
    details = option.details
    text = _named(details.help, spelling)
    if details.choices:
        text = " | ".join(details.choices) + _joined(text)
    parts = [text]
    if option.kind == "bool" and option.default:
        parts.append("false turns it OFF")
    if option.optional:
        unset = '""' if option.kind == "str" else "0"
        parts.append(f"{unset} = {_named(details.none_means, spelling)}")
    if details.flower_note:
        parts.append(details.flower_note)
    return "; ".join(p for p in parts if p)


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", text).replace("e+", "e")
    return json.dumps(str(value), ensure_ascii=False)


def toml_entry(key: str, value: Any, comment: str) -> list[str]:
    """``key = value`` under its comment, wrapped to the project's line length."""
    lines = [f"# {line}" for line in textwrap.wrap(comment, _COMMENT_WIDTH)]
    return [*lines, f"{key} = {toml_value(value)}"]


def flower_toml_lines() -> list[str]:
    """Every Flower run option's lines of [tool.flwr.app.config], in RunConfig's order."""
    lines: list[str] = []
    for key, option in flower_options().items():
        lines += toml_entry(key, flower_default(option), flower_comment(option))
    return lines
