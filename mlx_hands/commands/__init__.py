"""CLI verbs: each module has add_parser(subparsers, help) and run(args)."""

from __future__ import annotations

import argparse

from ..config import CONF, DTYPES


class CLIError(Exception):
    """An error whose message is meant for the user, printed without a traceback."""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model/--revision/--mano/--dtype and --conf: how every verb that runs the pipeline loads it."""
    p.add_argument("--model", default=None,
                   help="converted model folder, folder of original files or Hub repo id (default warmshao/WiLoR-mini)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.add_argument("--mano", default=None, help="MANO_RIGHT.pkl or mano.safetensors, if not in the model folder")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default: as stored)")
    p.add_argument("--conf", type=float, default=CONF, help=f"detector confidence threshold (default {CONF})")
