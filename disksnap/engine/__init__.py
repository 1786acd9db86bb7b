"""Generated from protos/; do not edit (make protos)."""
