"""Fixtures for the 2025-11-25 tasks suite: the same fake provider and daemon as tests/python.

The fixtures live in tests/python/conftest.py (they use nothing of the SDK but
`StdioServerParameters`, which 1.x has too); they are loaded from there under another
module name so that one definition serves both suites.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[1] / "python" / "conftest.py"
_spec = importlib.util.spec_from_file_location("exai_shared_fixtures", _SHARED)
assert _spec is not None and _spec.loader is not None
shared = importlib.util.module_from_spec(_spec)
sys.modules["exai_shared_fixtures"] = shared
_spec.loader.exec_module(shared)

# Fixtures pytest should see here (it collects them from this module's names).
anyio_backend = shared.anyio_backend
daemon = shared.daemon
fake_provider = shared.fake_provider
