"""`latentforge serve`: the runtime as a real-time HTTP and WebSocket service.

    service = Service({"faces_vae": latentforge.load("faces_vae.onnx", verify=True)}, Limits(max_queue=64))
    app = create_app(service, token=None)      # a FastAPI app: uvicorn here, or a Ray Serve ingress
    serve(service, host="127.0.0.1", port=8000)

service.py holds the models and the lifecycle, app.py the HTTP routes, stream.py the WebSocket filter,
guards.py the token, body-limit and metrics middleware, codecs.py the bytes at the edges, run.py uvicorn.
"""
from .app import create_app
from .run import build_server, check_bind, serve
from .service import Limits, Service, served_name

__all__ = ["Limits", "Service", "build_server", "check_bind", "create_app", "serve", "served_name"]
