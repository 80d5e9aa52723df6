"""Bad input stops `secure-fedsa run` before training: one line, exit code 2, nothing written."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secure_fedsa.app.cli import main

pytestmark = pytest.mark.integration


def _csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


REVIEWS = [
    ("a moving and funny film", "pos"),
    ("dull, long and flat", "neg"),
    ("the cast is wonderful", "pos"),
    ("i wanted my money back", "neg"),
    ("sharp writing throughout", "pos"),
    ("a mess from start to end", "neg"),
]


def _run(tmp_path, capsys, *args):
    out = tmp_path / "run"
    code = main(["run", "--num-layers", "1", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, out


def _assert_refused(code, err, out, needle):
    assert code == 2
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not out.exists(), "nothing may be written for bad input"


def test_unknown_method(tmp_path, capsys):
    _assert_refused(*_run(tmp_path, capsys, "--method", "fedprox"), "unknown method")


def test_missing_model_path(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    _assert_refused(*_run(tmp_path, capsys, "--model", missing), "does not exist")


def test_data_file_without_the_named_columns(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", REVIEWS, header=("review", "sentiment"))
    _assert_refused(*_run(tmp_path, capsys, "--dataset", data), "text")


def test_fewer_examples_than_clients(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", REVIEWS[:2])
    _assert_refused(*_run(tmp_path, capsys, "--dataset", data, "--clients", "3"), "clients")


def test_client_left_without_test_examples(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", REVIEWS)
    args = ("--dataset", data, "--clients", "3", "--partition", "iid", "--test-fraction", "0.1")
    _assert_refused(*_run(tmp_path, capsys, *args), "no test split")


def test_unknown_label(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", [*REVIEWS, ("not sure what to think", "meh")])
    _assert_refused(*_run(tmp_path, capsys, "--dataset", data, "--labels", "pos,neg"), "meh")


def test_delta_not_below_one_over_n(tmp_path, capsys):
    rows = REVIEWS * 20
    data = _csv(tmp_path / "d.csv", rows)
    args = ("--dataset", data, "--clients", "2", "--delta", "0.05", "--partition", "iid")
    _assert_refused(*_run(tmp_path, capsys, *args), "1/n")


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(["run", "--num-layers", "1", "--out", str(out)])
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("flag", ["--rounds=0", "--clip=-1", "--epsilon=0"])
def test_invalid_numbers(tmp_path, capsys, flag):
    code, err, out = _run(tmp_path, capsys, flag)
    assert code == 2 and not out.exists()


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "secure_fedsa.app.cli",
            "run",
            "--method",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --method: unknown method")


def test_keys_init_writes_a_private_client_bundle_and_a_public_server_bundle(tmp_path, capsys):
    import json
    import stat

    from secure_fedsa.crypto.keys import load_client_keys, load_server_keys

    assert main(["keys", "init", str(tmp_path / "k")]) == 0
    client, server = tmp_path / "k" / "client.keys", tmp_path / "k" / "server.keys"
    assert stat.S_IMODE(client.stat().st_mode) == 0o600
    assert "secret_key" not in json.loads(server.read_text())
    assert load_client_keys(client).fingerprint == load_server_keys(server).fingerprint
    printed = capsys.readouterr().out
    assert json.loads(client.read_text())["secret_key"][:40] not in printed
    # a second init never overwrites the bundles of a running federation
    assert main(["keys", "init", str(tmp_path / "k")]) == 2


def test_keys_init_provisions_one_signing_identity_per_client_and_revoke(tmp_path, capsys):
    import json
    import stat

    from secure_fedsa.crypto.signing import identity_path, load_identity, load_roster

    keys = tmp_path / "k"
    assert main(["keys", "init", str(keys), "--max-clients", "4", "--client-ids", "a,b,c"]) == 0
    roster = load_roster(keys / "roster.json")
    assert sorted(roster.clients) == ["a", "b", "c"]
    for owner in ("a", "b", "c", "server"):
        path = identity_path(keys, owner)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        identity = load_identity(path)
        expected = roster.server if owner == "server" else roster.key_of(owner)
        assert identity.key.public_bytes == expected and identity.server_key == roster.server
    # the public files name no private key; the printed output neither
    private = json.loads(identity_path(keys, "a").read_text())["private_key"]
    public_text = (keys / "roster.json").read_text() + (keys / "server.keys").read_text()
    assert private not in public_text and private not in capsys.readouterr().out
    assert main(["keys", "revoke", str(keys), "b"]) == 0
    revoked = load_roster(keys / "roster.json")
    assert sorted(revoked.clients) == ["a", "c"] and revoked.revoked == ("b",)
    assert revoked.digest != roster.digest
    assert main(["keys", "revoke", str(keys), "b"]) == 2  # not in the roster any more
    assert main(["keys", "init", str(tmp_path / "x"), "--max-clients", "2",
                 "--client-ids", "a,b,c"]) == 2  # fmt: skip
    assert main(["keys", "init", str(tmp_path / "y"), "--client-ids", "a,a"]) == 2
    # an edited roster is refused
    doc = json.loads((keys / "roster.json").read_text())
    doc["clients"]["z"] = doc["clients"]["a"]
    (keys / "roster.json").write_text(json.dumps(doc))
    assert main(["keys", "revoke", str(keys), "a"]) == 2
    assert "edited" in capsys.readouterr().err


# -- what a new user tried: each stops with exit 2, one line, and nothing left behind ---------
TINY = [
    "--max-examples", "800", "--clients", "2", "--partition", "iid", "--rounds", "1",
    "--local-steps", "1", "--batch-size", "64", "--physical-batch-size", "64",
    "--max-length", "16", "--eval-examples", "10",
]  # fmt: skip


def test_a_sequence_longer_than_the_encoder_is_refused(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--max-length", "5000")
    _assert_refused(code, err, out, "exceeds the 512 token positions")
    assert "--max-length 512 or less" in err[-1]


def test_a_lora_rank_above_the_layer_width_is_refused(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--lora-r", "100000")
    _assert_refused(code, err, out, "above the layer width 384")


def test_an_unwritable_run_directory_is_refused_without_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["run", "--num-layers", "1", *TINY, "--out", str(blocker / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) >= 1 and err[-1].startswith("error: cannot write the run")
    assert not any("Traceback" in line for line in err)


def test_corrupted_keys_leave_nothing_and_a_rerun_with_good_keys_works(tmp_path, capsys):
    import shutil

    good = tmp_path / "keys"
    sizes = "client-0=300,client-1=300,client-2=1,client-3=1"
    assert main(["keys", "init", str(good), "--max-clients", "4", "--client-sizes", sizes]) == 0
    bad = tmp_path / "bad-keys"
    shutil.copytree(good, bad)
    client = bad / "client.keys"
    client.write_text(client.read_text()[:200])
    client.chmod(0o600)
    capsys.readouterr()
    code, err, out = _run(tmp_path, capsys, *TINY, "--keys", str(bad))
    _assert_refused(code, err, out, "client.keys")
    code, err, out = _run(tmp_path, capsys, *TINY, "--keys", str(good))
    assert code == 0, err
    assert (out / "summary.json").exists()


def test_keys_without_client_weights_are_refused_before_any_training(tmp_path, capsys):
    """Keys made before roster weights (no --client-sizes) cannot aggregate: the weight no
    longer travels, every site divides by the roster's. The run stops before anything is
    written, saying how to make keys that work."""
    old = tmp_path / "old-keys"
    assert main(["keys", "init", str(old), "--max-clients", "4"]) == 0
    code, err, out = _run(tmp_path, capsys, *TINY, "--keys", str(old))
    _assert_refused(code, err, out, "roster fixes no client weights")
    assert "secure-fedsa keys init DIR --client-ids a,b,... --client-sizes" in err[-1]


def test_a_setup_failure_after_the_directory_was_made_removes_it(tmp_path, capsys, monkeypatch):
    from secure_fedsa.errors import CryptoError
    from secure_fedsa.transports import federation

    def broken(*args, **kwargs):
        raise CryptoError("the key generator failed (simulated)")

    monkeypatch.setattr(federation, "setup_codecs", broken)
    code, err, out = _run(tmp_path, capsys, *TINY)
    _assert_refused(code, err, out, "simulated")


def test_a_data_file_with_one_class_is_refused(tmp_path, capsys):
    rows = [(f"review number {i}", "pos") for i in range(200)]
    data = _csv(tmp_path / "one.csv", rows)
    _assert_refused(*_run(tmp_path, capsys, *TINY, "--dataset", data), "one label only ('pos')")


def test_a_continuous_label_column_says_so(tmp_path, capsys):
    rows = [(f"review number {i}", f"{(i * 37 % 100) / 100 + 0.005:.3f}") for i in range(200)]
    data = _csv(tmp_path / "scores.csv", rows)
    code, err, out = _run(tmp_path, capsys, *TINY, "--dataset", data)
    _assert_refused(code, err, out, "looks like a continuous score")


def test_a_tiny_delta_is_refused_with_the_way_out(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--delta", "1e-30")
    _assert_refused(code, err, out, "below what the accountant resolves")
    assert "1e-5 is usual" in err[-1]


def test_one_client_and_one_class_clients_are_warned_about(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--clients", "1", "--quiet", "--no-dp")
    assert code == 0
    assert any("one client: nothing is federated" in line for line in err)
    setup = __import__("json").loads((out / "setup.json").read_text())
    assert any("nothing is federated" in w for w in setup["warnings"])
    # a client whose share holds one class: warned on the console, never in setup.json (label
    # counts are statistics of the client's private records)
    from secure_fedsa.transports.federation import data_warnings

    warnings = data_warnings({"client-0": [10, 0], "client-1": [3, 4]})
    assert len(warnings) == 1 and "client-0 holds examples of one class only" in warnings[0]


def test_the_final_summary_shows_the_majority_class_rate(tmp_path, capsys):
    code = main(["run", "--num-layers", "1", *TINY, "--out", str(tmp_path / "r"), "--no-dp",
                 "--rounds", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    from secure_fedsa.transports.federation import load_summary

    evaluation = load_summary(tmp_path / "r")["evaluation"]
    majority = evaluation["majority_class"]
    assert set(majority) == {"client-0", "client-1"} and all(
        0.5 <= m <= 1 for m in majority.values()
    )
    for cid in majority:
        assert f"{cid}: accuracy" in out and "(majority class" in out
    beaten = evaluation["not_above_majority"]
    assert beaten == [c for c, a in evaluation["per_client"].items() if a <= majority[c]]
    assert "not differentially private" in out  # and where each client keeps them


# -- issue 35: inputs that were accepted and should not be ------------------------------------


def test_more_layers_than_the_model_has_is_refused(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--num-layers", "100")
    needle = "--num-layers 100 is more than the 6 layers of the encoder all-MiniLM-L6-v2"
    _assert_refused(code, err, out, needle)
    assert "use --num-layers 6 or less" in err[-1]


def test_more_adapter_layers_than_the_model_keeps_is_refused(tmp_path, capsys):
    code, err, out = _run(tmp_path, capsys, *TINY, "--adapter-layers", "2")  # --num-layers 1
    _assert_refused(code, err, out, "--adapter-layers 2 is more than the 1 encoder layer")
    out = tmp_path / "deep"
    code = main(["run", *TINY, "--adapter-layers", "7", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    _assert_refused(code, err, out, "--adapter-layers 7 is more than the 6 encoder layers")


def test_a_full_disk_leaves_no_temporary_file_and_the_same_out_works_afterwards(
    tmp_path, capsys, monkeypatch
):
    import errno

    from secure_fedsa.config import RunConfig
    from secure_fedsa.errors import ConfigError
    from secure_fedsa.site.rundir import RunDirectory

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "runs" / "run"
    code = main(["run", "--num-layers", "1", *TINY, "--no-alone", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: cannot write the run directory"), err
    assert "No space left on device; free some space" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert list(tmp_path.iterdir()) == []  # no config.json.tmp, no half directory, no runs/
    with pytest.raises(ConfigError, match="No space left"):
        RunDirectory.create(out, RunConfig())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    RunDirectory.create(out, RunConfig())  # the same --out is accepted once there is space
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_auditing_a_directory_that_is_not_a_run_writes_nothing(tmp_path, capsys):
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "holiday.txt").write_text("not a run")
    assert main(["audit", str(stranger)]) == 2
    assert main(["audit", str(stranger), "--bundle", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("neither a run directory nor an auditor bundle" in e for e in err)
    assert "DP" not in " ".join(err)  # no reasons made up from files that are not there
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["holiday.txt", "photos"]


def test_a_text_column_of_numbers_is_refused(tmp_path, capsys):
    rows = [(str(1000 + i), "pos" if i % 2 else "neg") for i in range(200)]
    data = _csv(tmp_path / "ids.csv", rows)
    code, err, out = _run(tmp_path, capsys, *TINY, "--dataset", data)
    _assert_refused(code, err, out, "every value of the text column 'text' is a number")
    assert "use --text-column" in err[-1]


# -- issue 35: the first run ------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]


def _python(*args):
    """``python ARGS`` in a fresh interpreter that imports this checkout's secure_fedsa."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_version_prints_the_package_version():
    from importlib.metadata import version

    proc = _python("-m", "secure_fedsa.app.cli", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"secure-fedsa {version('secure-fedsa')}"


def test_help_imports_neither_torch_nor_the_other_heavy_packages():
    probe = (
        "import sys\n"
        "from secure_fedsa.app.cli import main\n"
        "for argv in ([], ['run'], ['sweep'], ['audit'], ['keys', 'init']):\n"
        "    try:\n"
        "        main([*argv, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "heavy = ('torch', 'transformers', 'opacus', 'tenseal', 'peft', 'numpy', 'flwr')\n"
        "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = _python("-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED []"
    assert "--adapter-layers" in proc.stdout and "--epsilons" in proc.stdout


def test_the_final_block_names_the_next_steps_and_dp_warnings_go_to_stderr(tmp_path, capsys):
    import shlex

    out = tmp_path / "my run"
    code = main(["run", "--num-layers", "1", *TINY, "--rounds", "1", "--no-alone",
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    # 320 training records per client: the small-dataset hazard, a warning on stderr only
    assert "DP warn (client-0)" in printed.err
    assert "DP warn" not in printed.out and "WARNING" not in printed.out
    run = shlex.quote(str(out))
    steps = printed.out[printed.out.index("next steps:") :]
    assert f"secure-fedsa audit {run} " in steps
    assert f"secure-fedsa audit {run} --bundle " in steps
    assert f"python examples/use_client_model.py {run} client-0" in steps
    assert len(steps.strip().splitlines()) == 4


# a whole federation in a subprocess interrupted by SIGINT: on demand
@pytest.mark.e2e
def test_ctrl_c_names_the_run_directory_to_resume(tmp_path, capsys, monkeypatch):
    import re

    from secure_fedsa.transports import federation

    real = federation.run_federation

    def interrupted_after_round_1(config, run_dir, progress=None, **kwargs):
        def stop(number):
            raise KeyboardInterrupt

        progress.round_done = stop
        return real(config, run_dir, progress, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(federation, "run_federation", interrupted_after_round_1)
    code = main(["run", "--num-layers", "1", *TINY, "--rounds", "2", "--quiet", "--no-alone"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    found = re.fullmatch(
        r"interrupted: the run so far is in (runs/\d{8}-\d{6}-fedsa); continue it with: "
        r"secure-fedsa run --resume (\S+)",
        err[-1],
    )
    assert found and found.group(1) == found.group(2), err[-1]
    assert (tmp_path / found.group(1) / "config.json").is_file()
    monkeypatch.setattr(federation, "run_federation", real)
    assert main(["run", "--resume", found.group(1), "--quiet", "--no-alone"]) == 0
    assert (tmp_path / found.group(1) / "summary.json").is_file()


def test_ctrl_c_before_the_run_directory_exists_says_nothing_was_written(
    tmp_path, capsys, monkeypatch
):
    from secure_fedsa.transports import federation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(federation, "run_federation", interrupted)
    out = tmp_path / "run"
    assert main(["run", "--num-layers", "1", *TINY, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"interrupted before {out} was set up: nothing was written, nothing to resume"


def test_keys_init_fixes_the_clients_weights_from_their_sizes(tmp_path):
    """`--client-sizes` puts each client's weight (size / 100) in the signed roster; a size for
    a client the roster does not name, or one that is not a positive whole number, writes
    nothing."""
    from secure_fedsa.crypto.signing import load_roster

    keys = tmp_path / "k"
    args = ["keys", "init", str(keys), "--client-ids", "a,b", "--client-sizes"]
    assert main([*args, "a=1161,b=279"]) == 0
    assert load_roster(keys / "roster.json").weights == {"a": 11.61, "b": 2.79}
    for bad in ("a=1161,c=279", "a=0,b=3", "a=x,b=3"):
        target = tmp_path / bad.replace(",", "_").replace("=", "-")
        assert (
            main(["keys", "init", str(target), "--client-ids", "a,b", "--client-sizes", bad]) == 2
        )
        assert not (target / "client.keys").exists()
