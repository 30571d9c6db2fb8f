"""certfleet coordinator: local CA, operation catalogue, work-order signer."""

__all__: list[str] = []
