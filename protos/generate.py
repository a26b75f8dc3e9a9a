"""Regenerate the Python code for every .proto under protos/ (run: python -m protos.generate)."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: protos are compiled relative to it, so generated imports read `protos.vigil.v1`."""


def proto_files() -> list[Path]:
    """Every .proto file this package owns, relative to the repository root, in a stable order."""
    return sorted(p.relative_to(ROOT) for p in (ROOT / "protos").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write `_pb2.py`, `_pb2.pyi` and `_pb2_grpc.py` for every proto into `out_dir` (mirroring paths)."""
    from grpc_tools import protoc  # a development dependency, imported only when generating

    well_known = str(resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(ROOT / p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write (default: the repository root)")
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
