"""gRPC servicers: proto in, proto out, nothing else (logic lives in commands and queries)."""
