"""The coordinator's operations, one module per area of the catalogue."""
