"""Root test configuration: put tests/ on sys.path so every suite can `import support`.

`support` (tests/support/) holds reusable helpers: real agent processes, qemu-img/qemu-io
wrappers, throwaway certificates. Keep this file generic; suites add fixtures in their own
sub-directory conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
