"""Several worker processes on one host (`vigil serve --workers N`): the supervisor that holds the shared gRPC port,
starts and restarts the workers and serves the host's HTTP port (`supervisor`, `processes`, `front`); what runs in
each worker (`worker`); and the trailer that names the worker that answered a call (`trailer`). May import the
wiring (`vigil.server.app`, `vigil.server.monitoring`), `settings`, `logs`, `store.records`, `security`, `web`,
`api.handler_wrapping`, `vigil.telemetry` and `vigil.protos`.
"""

from vigil.server.workers.supervisor import Supervisor, supervise
from vigil.server.workers.trailer import WORKER_KEY

__all__ = ["WORKER_KEY", "Supervisor", "supervise"]
