"""The smallest DP federation that still exercises everything (shared by several test modules):
the real encoder cut to one layer, 2 clients of about 320 training records, DP at ε = 8."""

TINY_DP = dict(
    num_layers=1,
    max_examples=800,
    num_clients=2,
    partition="iid",
    rounds=2,
    local_steps=2,
    batch_size=64,
    physical_batch_size=64,
    max_length=16,
    eval_examples_per_round=10,
    epsilon=8.0,
    seed=0,
)


class StopAfterRound(Exception):
    """Raised from the progress callback to interrupt a federation after a round."""


def interrupt_then_resume(config, run_dir, after: int = 1) -> None:  # noqa: ANN001
    """Run ``config`` into ``run_dir``, interrupt it after round ``after``, then resume it to
    the end (as a restarted process would, from the run directory only)."""
    import pytest

    from secure_fedsa.transports.federation import Progress, run_federation

    def stop(number: int) -> None:
        if number == after:
            raise StopAfterRound

    with pytest.raises(StopAfterRound):
        run_federation(config, run_dir, Progress(message=lambda _: None, round_done=stop))
    run_federation(config, run_dir, Progress(message=lambda _: None), resume=True)


# The run-level canary audit's tiny run (tests/test_run_canary_power.py,
# benchmarks/run_canary_power.py): the encoder cut to one layer, 2 clients of about 80 training
# records, each client's whole training set in every batch (q = 1: no subsampling hides a
# canary), 2 rounds of 2 steps, the default number of canaries (10 000), on LoRA of rank 16 so
# that the shared A tensors have the room (12 288 values, as many as the default job's).
TINY_AUDIT = dict(
    num_layers=1,
    lora_r=16,
    max_examples=200,
    num_clients=2,
    partition="iid",
    rounds=2,
    local_steps=2,
    batch_size=256,
    physical_batch_size=128,
    max_length=16,
    eval_examples_per_round=10,
    seed=0,
    canaries=10_000,
)
