"""What membership of a fleet costs a server: the tabular classifier at c=64 (one-row Predict), a fresh server per
run, as a fleet of one (`VIGIL_FLEET__ENABLED=false`) against one member of a fleet of four, in the same run. The
three other members are idle servers sharing the same SQLite store, started once; every member publishes its
summary and reads the others' each second (the default tick), and one of them holds the lease.

Run: python -m bench.fleet --models bench/models [--repeats 6] [--pin] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.run import Server, alternate, pin_servers

MODEL = "tabular_quality"


def confirm_fleet(models: Path, env: dict[str, str], members: int) -> None:
    """A server started as the measured ones are sees the whole fleet (else the comparison would mean nothing)."""
    from vigil.clients import Client

    server = Server(models, env=env, pinned=False)
    try:
        with Client(server.target) as client:
            for frame in client.telemetry(interval_ms=500, sections=["server"]):
                if len(frame.members) == members:
                    print(f"fleet confirmed: {members} members, leader {[m.id for m in frame.members if m.leader]}")
                    return
                if frame.sequence > 20:
                    raise RuntimeError(f"the fleet has {len(frame.members)} members, not {members}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("bench/models"))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--members", type=int, default=4, help="members of the fleet, the measured one among them")
    parser.add_argument("--scale", type=float, default=1.0, help="load windows: 1 s warm-up and 4 s, times this")
    parser.add_argument("--pin", action="store_true",
                        help="the measured server on CPU 0; the load generator and the other members on the others")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.pin:
        pin_servers(parser)
    with tempfile.TemporaryDirectory(prefix="vigil-fleet-bench-") as folder:
        alone = {"VIGIL_STORE__URL": f"sqlite:///{folder}/alone.db", "VIGIL_FLEET__ENABLED": "false",
                 "VIGIL_TELEMETRY__TRACING": "false"}
        member = {"VIGIL_STORE__URL": f"sqlite:///{folder}/fleet.db", "VIGIL_TELEMETRY__TRACING": "false"}
        others = [Server(args.models, env=member, pinned=False) for _ in range(args.members - 1)]
        try:
            confirm_fleet(args.models, member, args.members)
            modes = {"alone": (args.models, alone, ""), f"fleet of {args.members}": (args.models, member, "")}
            points = alternate(modes, MODEL, args.models, args.repeats, args.scale)
        finally:
            for server in others:
                server.stop()
    base = points[0]["inferences_per_s"]
    for point in points:
        print(f"{point['telemetry']}: {point['inferences_per_s']:.0f}/s median ({point['inferences_per_s'] / base:.3f}"
              f" of alone), runs {[round(r) for r in point['rates']]}, cpu {point['server_cpu_s_per_1000']:.3f} s "
              "per 1000", flush=True)
    if args.out:
        args.out.write_text(json.dumps(points, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
