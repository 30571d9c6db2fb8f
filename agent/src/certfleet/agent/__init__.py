"""certfleet agent: executes signed work orders on the host that uses the keys."""

__all__: list[str] = []
