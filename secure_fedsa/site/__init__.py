"""The site layer: one client and everything it holds, none of which the server sees.

- ``client``: a client's data, LoRA state, privacy ledger, training and checks.
- ``build``: a site built from what it alone holds (its data, keys and state directory), and its
  optimisation and privacy plans; shared by both transports.
- ``prepare_data``: from a configuration to each client's tokenized, checked data.
- ``keys``: choosing and loading a run's keys and codecs.
- ``aggregate_check``: could honest clients have produced this decrypted aggregate? (P7)
- ``rundir``, ``egress``, ``private_stats``: the run directory, the record of every message a
  client sent, and the statistics that stay in a client's own directory.
- ``model_card``: the model card of an exported adapter.
"""
