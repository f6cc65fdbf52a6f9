"""The tools service: the gRPC server over the registry (server.py), fault injection
(faults.py) and `inloop tools serve` (cli.py). The tools themselves are pure functions below
it (tools/functions, tools/registry.py, tools/state.py), which the internal route calls too."""
