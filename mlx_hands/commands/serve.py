"""mlx-hands serve: hands over HTTP and WebSocket from one shared model, with a browser demo page.

    mlx-hands serve --model ./wilor-mlx                  # http://127.0.0.1:8765/ (demo page), /v1/predict, /v1/stream
    mlx-hands serve --host 0.0.0.0 --token s3cret        # reachable from other machines: use a token

Needs the extra: pip install "mlx-hands[serve]". See docs/serve.md for the API.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from ..config import IOU, MAX_DET, RESCALE_FACTOR
from ..pipeline.runner import HandPosePipeline
from . import add_model_arguments
from .predict import _check_args

from ..serve import ServeConfig, serve  # starlette, uvicorn, websockets: the extra [serve] (cli.EXTRAS)

TOKEN_ENV = "MLX_HANDS_TOKEN"


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help=help_text, description=(
        "Serve hand pose estimation over HTTP (POST /v1/predict: one image -> the JSON `mlx-hands predict` "
        "writes) and WebSocket (/v1/stream: JPEG/PNG frames in, tracked hands out), with a webcam demo page "
        "at /. All clients share one model; their hands are batched into one forward where they meet in time."))
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port)")
    p.add_argument("--token", default=None,
                   help=f"require this token on every request: 'Authorization: Bearer T' or ?token=T "
                        f"(default: ${TOKEN_ENV} if set, else none)")
    p.add_argument("--max-body-mb", type=float, default=20.0,
                   help="largest request body or stream frame, MB (default 20)")
    p.add_argument("--max-clients", type=int, default=16,
                   help="open streams + predict requests in progress at once; more get 503 (default 16)")
    p.add_argument("--max-batch", type=int, default=16, help="most images in one forward (default 16)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web page origin (e.g. http://localhost:5173) that may call the API from a browser; "
                        "repeat for more, '*' for any (default: only the server's own demo page)")
    p.add_argument("--iou", type=float, default=IOU, help=f"default NMS IoU threshold (default {IOU})")
    p.add_argument("--max-det", type=int, default=MAX_DET, help=f"default most hands per image (default {MAX_DET})")
    p.add_argument("--imgsz", type=int, default=None, help="detector input size (default: the checkpoint's)")
    p.add_argument("--rescale-factor", type=float, default=RESCALE_FACTOR,
                   help=f"crop side / largest box side (default {RESCALE_FACTOR} as WiLoR-mini)")
    p.add_argument("--focal-length", type=float, default=None, metavar="PX",
                   help="default focal length in pixels of the input images (default: WiLoR's 5000/256 * max(W, H))")
    p.set_defaults(func=run)
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    _check_args(args)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    config = ServeConfig(host=args.host, port=args.port, token=token, max_body_mb=args.max_body_mb,
                         max_clients=args.max_clients, max_batch=args.max_batch,
                         allow_origins=tuple(args.allow_origin), verbose=args.verbose)
    if token is None and not _is_loopback(args.host):
        print(f"mlx-hands serve: warning: listening on {args.host} without --token: anyone who can reach this "
              "machine can use the server", file=sys.stderr)

    def load():
        return HandPosePipeline.from_pretrained(
            args.model, mano_path=args.mano, dtype=args.dtype, revision=args.revision,
            conf=args.conf, iou=args.iou, max_det=args.max_det, imgsz=args.imgsz,
            rescale_factor=args.rescale_factor, focal_length_px=args.focal_length,
        )

    def listening(url: str) -> None:
        suffix = f"?token={token}" if token else ""
        print(f"mlx-hands serve: listening on {url} (demo page {url}/{suffix}); loading the model, "
              f"{url}/health says when it is ready. Ctrl-C stops.", flush=True)

    ended = serve(config, load, on_listening=listening)
    print("mlx-hands serve: stopped" + ("" if ended else " (left the model load / forward in progress)"), flush=True)
    if not ended:  # MLX is busy in the inference thread: interpreter teardown under it would abort
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    return 0
