"""Each exported adapter carries its guarantee (issue 35.5): a model card as its README.md, with
the run's real method, data, ε, δ, relation and sharing, loud when a protection was off, and no
private statistic; and a base-model reference that loads on another machine, never a path of
the machine that trained it."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml  # huggingface_hub's own dependency (model-card metadata)
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.model.base_reference import (
    DEFAULT_BASE_MODEL,
    bundled_model_dir,
    portable_reference,
    resolve_base_model,
)
from secure_fedsa.site.model_card import (
    AuditNote,
    CardInputs,
    epsilon_text,
    render_card,
    write_run_cards,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real DP run (one layer, two rounds of two steps) with one finishing step."""
    from secure_fedsa.transports.federation import Progress, run_federation

    path = tmp_path_factory.mktemp("card") / "run"
    config = RunConfig(**TINY_DP, finish_steps=1)
    run_federation(config, path, Progress(message=lambda _: None))
    return path


def _adapters(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "adapters").iterdir()) + sorted(
        run_dir.glob("clients/*/finished-adapter")
    )


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


ROOTED = re.compile(r"""(?:^|[\s"'`(=,\[])/[\w.+-]+/""", re.MULTILINE)


def test_no_path_of_the_training_machine_in_any_exported_file(run_dir: Path) -> None:
    machine = {str(run_dir), str(run_dir.resolve()), str(Path.home()), sys.prefix, str(REPO)}
    machine.add(str(bundled_model_dir()))
    adapters = _adapters(run_dir)
    assert len(adapters) == 4  # two DP models, two finished ones
    for adapter in adapters:
        for file in adapter.iterdir():
            data = file.read_bytes()
            for path in machine:
                assert path.encode() not in data, (file.name, path)
            if file.suffix in (".md", ".json"):
                assert not ROOTED.search(data.decode()), (file, ROOTED.search(data.decode()))
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == DEFAULT_BASE_MODEL


def test_the_card_states_the_runs_real_guarantee(run_dir: Path) -> None:
    card = (run_dir / "adapters/client-1/README.md").read_text()
    ledger = json.loads((run_dir / "clients/client-1/privacy_ledger.json").read_text())
    spent = ledger["entries"][-1]["epsilon"]
    meta = _front_matter(card)
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == DEFAULT_BASE_MODEL
    assert {"lora", "fedsa", "differential-privacy", "federated-learning"} <= set(meta["tags"])
    assert "Model Card for Model ID" not in card  # peft's template is gone
    assert f"**({epsilon_text(spent)}, 1e-05)-differential privacy**" in card
    assert float(epsilon_text(spent)) >= spent  # rounded up, never down
    assert "| ε target (budget) | 8 |" in card
    assert "| δ | 1e-05 |" in card
    assert "| neighbouring relation | replace-one:" in card
    assert "privacy-loss distribution (PLD)" in card
    assert (
        f"| this client's training records (public) | {ledger['identity']['dataset_size']} |"
        in card
    )
    assert "| DP-SGD steps | 4 |" in card  # 2 rounds × 2 steps
    assert "client-1, one of 2 clients" in card
    assert "`rotten_tomatoes`" in card
    assert "| sent to the server, each round | A (LoRA's A matrices): encrypted with CKKS" in card
    assert "| stayed on this client | B (LoRA's B matrices), the task head" in card
    assert "| encryption (CKKS) | on |" in card and "| pairwise masking | on |" in card
    assert "⚠" not in card  # every protection on
    assert "`secure-fedsa audit RUN_DIR`" in card  # no audit yet: how to get one
    assert "Not released" in card


def test_the_finished_model_card_says_it_is_not_dp(run_dir: Path) -> None:
    card = (run_dir / "clients/client-0/finished-adapter/README.md").read_text()
    assert "not-differentially-private" in _front_matter(card)["tags"]
    assert "> ⚠ **NOT DIFFERENTIALLY PRIVATE.**" in card
    assert "**not this finished model**" in card


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _spellings(value: float) -> set[str]:
    if isinstance(value, int):
        return {str(value)}
    return {repr(value), *(f"{value:.{d}f}" for d in range(1, 6)), f"{value:.4g}"}


def test_no_private_statistic_in_any_card(run_dir: Path) -> None:
    for cid in ("client-0", "client-1"):
        private = run_dir / "clients" / cid
        values = _numbers(json.loads((private / "evaluation.json").read_text()))
        for line in (private / "rounds.jsonl").read_text().splitlines():
            row = json.loads(line)
            values += _numbers({k: v for k, v in row.items() if k != "round"})
        values = [v for v in values if v not in (0, 1, 2, 4, 8, 16, 64, 80)]  # config's numbers
        cards = [(run_dir / "adapters" / cid / "README.md").read_text()]
        cards.append((private / "finished-adapter/README.md").read_text())
        # a coarse spelling of a private value that is also a public configuration number
        # (e.g. 0.2, the test fraction) says nothing about the records: not a leak
        public = {
            text
            for number in _numbers(json.loads((run_dir / "config.json").read_text()))
            for text in (str(number), *_spellings(number))
        }
        for card in cards:
            for value in values:
                for text in _spellings(value) - public:
                    found = re.search(rf"(?<![\w.]){re.escape(text)}(?!\d)", card)
                    assert not found, (cid, value, text)
            assert "accuracy on this client's own test split:" not in card.lower()


def test_the_adapter_loads_by_its_reference_in_a_fresh_process(run_dir: Path, tmp_path) -> None:
    adapter = run_dir / "adapters/client-0"
    script = textwrap.dedent(
        """
        import json, sys, warnings
        import torch
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel
        from secure_fedsa.model.base_reference import resolve_base_model

        adapter = sys.argv[1]
        reference = json.load(open(adapter + "/adapter_config.json"))["base_model_name_or_path"]
        base = resolve_base_model(reference)
        config = AutoConfig.from_pretrained(base, num_hidden_layers=1)
        encoder = AutoModel.from_pretrained(base, config=config)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. peft's missing adapter keys
            model = PeftModel.from_pretrained(encoder, adapter).eval()
        saved = load_file(adapter + "/adapter_model.safetensors")
        loaded = get_peft_model_state_dict(model)
        assert sorted(saved) == sorted(loaded), (sorted(saved), sorted(loaded))
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
        print(reference, base, len(saved))
        """
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(adapter)],
        cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    reference, base, tensors = proc.stdout.split()
    assert reference == DEFAULT_BASE_MODEL
    assert Path(base) == bundled_model_dir()
    assert int(tensors) == 4  # query and value of one layer, A and B each


def test_the_audit_writes_its_verdict_into_the_cards(run_dir: Path) -> None:
    from secure_fedsa.app.cli import main

    assert main(["audit", str(run_dir)]) == 0
    report = json.loads((run_dir / "audit/report.json").read_text())
    for adapter in _adapters(run_dir):
        card = (adapter / "README.md").read_text()
        assert f"**{report['verdict']}** (audited {report['audited_at']})" in card
        assert "Report: `audit/report.json` in the run directory" in card
        assert str(run_dir) not in card


# -- pure rendering ---------------------------------------------------------------------------
def _card(config: RunConfig, **changes: object) -> str:
    return render_card(CardInputs(config, "client-0", "the data", DEFAULT_BASE_MODEL, **changes))


def test_a_card_of_a_run_without_dp_says_so_loudly() -> None:
    card = _card(RunConfig(dp=False, epsilon=None, encryption=False))
    assert "> ⚠ **NO DIFFERENTIAL PRIVACY.**" in card
    assert "> ⚠ **NO ENCRYPTION**" in card
    assert "**IN PLAINTEXT: encryption was off" in card
    assert "| encryption (CKKS) | **OFF** |" in card
    assert "not-differentially-private" in _front_matter(card)["tags"]
    assert "No differential privacy: no ε" in card


def test_masking_off_and_a_released_evaluation_are_loud() -> None:
    card = _card(RunConfig(masking=False, release_evaluation=True), released_accuracy=0.8125)
    assert "> ⚠ **NO PAIRWISE MASKING**" in card
    assert "> ⚠ **EVALUATION RELEASED**" in card
    assert "| pairwise masking | **OFF** |" in card
    assert "test split: 0.8125. The run released it" in card


def test_the_card_names_what_each_method_shares() -> None:
    fedit = _card(RunConfig(method="fedit", head="shared"))
    assert "A (LoRA's A matrices), B (LoRA's B matrices), the task head: encrypted" in fedit
    assert "fedit + shared head" in fedit
    local = _card(RunConfig(method="local"))
    assert "| sent to the server, each round | nothing: nothing was sent |" in local
    vera = _card(RunConfig(adapter="vera"))
    assert "A (VeRA's λ_d vectors): encrypted" in vera


def test_an_audit_note_is_quoted_with_its_hash() -> None:
    note = AuditNote("FAIL", "FAIL: ledger-chain failed", "2026-12-07T00:00:00+00:00",
                     "audit/report.json", "ab" * 32)  # fmt: skip
    card = _card(RunConfig(), audit=note)
    assert "**FAIL** (audited 2026-12-07T00:00:00+00:00): ledger-chain failed" in card
    assert "ab" * 32 in card


def test_epsilon_is_rounded_up() -> None:
    assert epsilon_text(7.9941) == "7.995"
    assert epsilon_text(8.0) == "8.000"
    assert epsilon_text(math.inf).startswith("∞")


def test_portable_references(tmp_path) -> None:
    assert portable_reference(None) == DEFAULT_BASE_MODEL
    assert portable_reference(bundled_model_dir()) == DEFAULT_BASE_MODEL
    assert portable_reference(str(bundled_model_dir())) == DEFAULT_BASE_MODEL
    own = tmp_path / "my-encoder"
    own.mkdir()
    assert portable_reference(own) == "my-encoder"
    assert portable_reference("org/model") == "org/model"
    assert resolve_base_model(DEFAULT_BASE_MODEL) == str(bundled_model_dir())
    assert resolve_base_model("org/model") == "org/model"


def test_cards_of_a_directory_without_adapters_are_none(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(RunConfig().to_dict()))
    assert write_run_cards(tmp_path) == []
