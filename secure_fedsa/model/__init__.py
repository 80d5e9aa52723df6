"""The model layer: the pretrained encoder, its adapters and which of their tensors are shared.

- ``encoder``: the encoder + adapter (peft LoRA, rsLoRA or VeRA) + mean-pooling task head.
- ``vera``: VeRA made trainable under Opacus (per-sample gradients of the scaling vectors).
- ``frozen_prefix``: the encoder's frozen bottom, computed once per record.
- ``sharing``: which tensors each method shares, and the flat vector they travel as.
- ``base_reference``: the base model an exported adapter names, loadable on another machine.

Nothing here knows about clients, keys, privacy ledgers or transports.
"""
