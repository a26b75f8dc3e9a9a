"""Vigil's model server: the model repository, the request path, the gRPC and HTTP services, and the wiring
that starts and stops them.

`app` builds and runs the server from `settings`; `api` holds the gRPC servicers and their wire conversion,
`inference` the one path every request takes, `batching` the dynamic batcher, `models` the repository, versions and
ONNX Runtime sessions, `rollouts` traffic splits between versions, `security` authentication and the audit log,
`monitoring` (beside `app`) the wiring of quality and alerting, `web` the HTTP port, and `errors` the one mapping to
gRPC status codes. The server imports `vigil.telemetry` and `vigil.protos`, never `vigil.clients`.
"""

from vigil.server.app import App, build_server, serve
from vigil.server.settings import Settings

__all__ = ["App", "Settings", "build_server", "serve"]
