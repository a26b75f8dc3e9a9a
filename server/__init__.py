"""Vigil's model server: the model repository, the request path and the gRPC services."""

from server.app import App, build_server, serve
from server.settings import Settings

__all__ = ["App", "Settings", "build_server", "serve"]
