"""Tool implementations: one pure function per file, each over explicit state.

Every tool is `fn(state, **arguments) -> dict`, where `state` is a
`services.tools.state.Session` (a kv namespace plus the shared search index). A tool
refuses bad input by raising `services.tools.state.ToolError` with a message the caller
can act on. The registry (services/tools/registry.py) holds their JSON Schemas.
"""
