"""The committed generated code is exactly what `python -m vigil.protos.generate` writes today."""

from __future__ import annotations

from pathlib import Path

from vigil.protos.generate import PROTOS, generate, proto_files


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert fresh, "protoc wrote nothing"
    assert len(fresh) == 3 * len(proto_files())
    stale = [str(p) for p in fresh if (PROTOS / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"regenerate with `python -m vigil.protos.generate`: {stale}"
    committed = sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*_pb2*.py*"))
    assert committed == fresh, "generated files without a .proto (or missing ones)"
