"""Black-box contract tests of the storage agent (SPEC §6), against real processes."""
