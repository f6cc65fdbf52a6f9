"""The runtime service: the gRPC server over the engine (server.py), the scheduler that feeds
the engine from asyncio (scheduler.py), the internal route (internal_route.py), and the
`inloop runtime serve` / `inloop generate` commands (cli.py)."""
