"""Reusable test support: real processes, qemu-img/qemu-io helpers, throwaway certificates.

Modules:
    ids        -- new UUIDs and operation ids
    processes  -- `AgentProcess`: a real `disksnap-agent` subprocess on a loopback port
    qemu       -- typed wrappers around qemu-img / qemu-io for writing and checking data
    content    -- an expected-content model of a disk (runs of bytes per MiB)
    certs      -- a private CA with server and client certificates (mTLS tests)
    agent      -- `AgentDriver`: a thin convenience layer over the generated agent stub
    chains     -- build volume chains through an agent, fill them, check them against qemu
    fs         -- directory-tree snapshots to prove that nothing changed on disk
"""
