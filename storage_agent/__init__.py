"""disksnap storage agent: one per hypervisor host, doing the per-disk image work (SPEC §6).

Run it with ``disksnap-agent`` (:mod:`storage_agent.__main__`).
"""
