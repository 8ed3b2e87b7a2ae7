"""`vggnet serve`: a run behind HTTP, with dynamic batching, Prometheus metrics, a graceful
shutdown and a small page to try it in a browser.

Needs the ``serve`` extra (``pip install 'vggnet[serve]'``): FastAPI, uvicorn,
python-multipart and prometheus-client.
"""

from .app import ServeSettings, create_app
from .backend import BACKENDS, ServedModel
from .batcher import BatchError, DynamicBatcher, Overloaded
from .server import BackgroundServer, serve

__all__ = ["BACKENDS", "BackgroundServer", "BatchError", "DynamicBatcher", "ServeSettings", "ServedModel", "create_app", "serve"]
