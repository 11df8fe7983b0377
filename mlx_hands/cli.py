"""`mlx-hands` command line. Each subcommand lives in mlx_hands/commands/<name>.py with
`add_parser(subparsers)` and `run(args)`; modules are imported only when their verb runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import cv2

from .commands import CLIError

COMMANDS = {
    "predict": "Detect hands in images, folders or videos and write results",
    "live": "Run on a webcam stream in a window",
    "convert": "Convert the original WiLoR / detector / MANO files to the MLX format",
    "quantize": "Write a quantized or lower-precision copy of a converted model",
    "bench": "Time the model stage and the full route",
    "warmup": "Compile a model's GPU kernels ahead of use (for container images)",
    "annotate": "Annotate image and video collections into Parquet (resumable; local or Ray)",
    "serve": "Serve hands over HTTP and WebSocket to other programs, with a browser demo page",
}


# the optional dependencies of a verb, as the pip extra that installs them
EXTRAS = {"annotate": "annotate", "serve": "serve"}


def _unavailable(name: str, error: ImportError) -> str:
    missing = (getattr(error, "name", None) or str(error)).split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return f"{missing} is not installed"
    return f'{missing} is not installed: pip install "mlx-hands[{extra}]"'


def _command(name: str):
    return importlib.import_module(f"mlx_hands.commands.{name}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlx-hands", description="WiLoR 3D hand pose estimation in MLX")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and timings")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if chosen in (None, name) or chosen not in COMMANDS:
            try:
                mod = _command(name)
            except ImportError as e:  # a missing optional dependency: say so when the verb is used
                why = _unavailable(name, e)
                stub = sub.add_parser(name, help=f"{help_text} (unavailable: {why})")
                stub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
                stub.set_defaults(unavailable=why)
                continue
            mod.add_parser(sub, help_text)
        else:
            sub.add_parser(name, help=help_text)  # listed in --help without importing its module
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    # each message once: huggingface_hub prints its own warnings; OpenCV's decoders log to stderr what our
    # errors already say in one line
    logging.getLogger("huggingface_hub").propagate = False
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING if args.verbose else cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        if getattr(args, "unavailable", None):
            raise CLIError(args.unavailable)
        return int(_command(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, FileNotFoundError, ValueError, OSError) as e:
        if args.verbose:
            raise
        print(f"mlx-hands {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
