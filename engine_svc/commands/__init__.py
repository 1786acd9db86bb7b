"""Use cases, one module per operation. Each validates and admits in one transaction."""
