"""`secure-fedsa sweep` (placeholder until the sweep lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("sweep", help="privacy-utility sweep (not implemented yet)")
