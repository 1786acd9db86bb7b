"""Talking to storage agents: the AgentClient protocol and its gRPC implementation."""
