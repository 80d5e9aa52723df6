"""`secure-fedsa audit` (placeholder until the audits land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("audit", help="audit a run directory (not implemented yet)")
