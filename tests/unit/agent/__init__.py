"""Unit tests of the storage agent (storage_agent/): real qemu-img on tmp files, no gRPC."""
