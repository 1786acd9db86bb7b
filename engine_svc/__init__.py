"""disksnap engine: owns VM, disk, volume, snapshot and job state; orchestrates agents."""
