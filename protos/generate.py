"""Regenerate the Python code for every .proto under protos/ (run: python -m vigil.protos.generate).

The protos are compiled as if this folder sat at `vigil/protos/` (a temporary tree links it there), so the
generated code imports `vigil.protos.vigil.v1`, the name the package is installed under, and the .proto files
import each other by those paths.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
"""This folder: the root of the `vigil.protos` package."""

PACKAGE_PATH = Path("vigil") / "protos"
"""Where the protos sit in the import namespace, and so the prefix of every .proto's import path."""


def proto_files() -> list[Path]:
    """Every .proto file this package owns, relative to this folder, in a stable order."""
    return sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write `_pb2.py`, `_pb2.pyi` and `_pb2_grpc.py` for every proto into `out_dir`, mirroring this folder."""
    from grpc_tools import protoc  # a development dependency, imported only when generating

    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        include, written = Path(tmp) / "include", Path(tmp) / "out"
        (include / PACKAGE_PATH).parent.mkdir(parents=True)
        (include / PACKAGE_PATH).symlink_to(PROTOS, target_is_directory=True)
        written.mkdir()
        args = [
            "grpc_tools.protoc",
            f"-I{include}",
            f"-I{well_known}",
            f"--python_out={written}",
            f"--pyi_out={written}",
            f"--grpc_python_out={written}",
            *[str(PACKAGE_PATH / p) for p in proto_files()],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see the messages above")
        for produced in (written / PACKAGE_PATH).rglob("*"):
            if produced.is_file():
                target = out_dir / produced.relative_to(written / PACKAGE_PATH)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(produced, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTOS, help="where to write (default: this folder)")
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
