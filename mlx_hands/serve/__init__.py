"""`mlx-hands serve`: hands over HTTP and WebSocket from one shared model (the optional extra [serve]).

    from mlx_hands.serve import ServeConfig, serve
    serve(ServeConfig(port=8765), load=lambda: HandPosePipeline.from_pretrained("./wilor-mlx"))

app.py: routes and the uvicorn runner; worker.py: the one thread that drives MLX and batches clients;
stream.py: a stream connection's per-frame step; settings.py: checks of options, settings and image bytes;
static/index.html: the demo page. See docs/serve.md.
"""

from .app import HandsServer, ServeConfig, serve

__all__ = ["HandsServer", "ServeConfig", "serve"]
