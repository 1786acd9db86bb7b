"""disksnap: per-disk VM snapshots.

This package holds the generated API (``disksnap.agent.v1``, ``disksnap.engine.v1``); the
SDK client and the CLI grow here as the engine lands.
"""

__all__: list[str] = []
