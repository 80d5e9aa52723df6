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
