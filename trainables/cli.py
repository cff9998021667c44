"""Command line of ``python -m trainables.loop``, kept apart from the training loop.

Why a module of its own: ``trainables.loop`` imports torch, transformers and PEFT (seconds on a
CPU machine), so its ``--help`` and argument errors are answered from here, before those load.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainables.loop", description="Train one LoRA configuration (no Ray needed).")
    ap.add_argument("--config", help="YAML with model/data/lora/train sections (e.g. trainables/configs/seed-002.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. --set lora.r=16")
    ap.add_argument("--out", help="directory for the latest checkpoint (out/last) and metrics.json")
    ap.add_argument("--resume-from", help="checkpoint directory to continue from (e.g. OUT/last)")
    return ap
