"""The committed generated stubs equal a fresh generation from protos/, and buf lint passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATED_GLOBS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "*_pb2_grpc.pyi")


def _generated_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for pattern in GENERATED_GLOBS
        for path in (root / "disksnap").rglob(pattern)
    }


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"gen_protos.py failed:\n{proc.stdout}\n{proc.stderr}"
    fresh = _generated_files(tmp_path)
    assert fresh, "gen_protos.py produced no stubs"
    committed = _generated_files(REPO)
    assert committed == fresh, (
        f"stub sets differ: missing {sorted(map(str, fresh - committed))}, "
        f"stale {sorted(map(str, committed - fresh))} (run `make protos`)"
    )
    stale = [
        str(rel)
        for rel in sorted(fresh)
        if (tmp_path / rel).read_bytes() != (REPO / rel).read_bytes()
    ]
    assert not stale, f"committed stubs differ from protos/ (run `make protos`): {stale}"
    # Package markers written by the generator must exist in the repository too.
    for init in tmp_path.rglob("__init__.py"):
        assert (REPO / init.relative_to(tmp_path)).is_file(), (
            f"missing {init.relative_to(tmp_path)}"
        )


def test_buf_lint_passes() -> None:
    buf = Path(sys.executable).parent / "buf"
    proc = subprocess.run(
        [str(buf), "lint"],
        cwd=REPO / "protos",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"buf lint failed:\n{proc.stdout}\n{proc.stderr}"
