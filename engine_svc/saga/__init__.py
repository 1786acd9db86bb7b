"""Running jobs: leases, steps with retries, per-disk compensation, recovery after a crash."""
