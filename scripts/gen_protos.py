"""Generate Python, gRPC and mypy stubs from protos/ into an output root.

Usage: python scripts/gen_protos.py [OUT_ROOT]   (default: the repository root)
The committed stubs under disksnap/*/v1/ must equal what this produces (tests check it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
PACKAGE_INIT = '"""Generated from protos/; do not edit (make protos)."""\n'


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every .proto under protos/ and return the files written."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    # protoc finds the mypy plugins on PATH; they live next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written: list[Path] = []
    for proto in protos:
        package = Path(proto).parent
        for d in (package, *package.parents[:-2]):
            init = out_root / d / "__init__.py"
            if not init.exists():
                init.write_text(PACKAGE_INIT)
        written += sorted((out_root / package).glob(f"{Path(proto).stem}_pb2*"))
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for path in generate(target):
        print(path.relative_to(target))
