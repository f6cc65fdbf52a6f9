"""Tool implementations: one pure function per file, each over explicit state.

Every tool is `fn(state, **arguments) -> dict`, where `state` is a
`services.tools.state.Session` (a kv namespace plus the shared search index). A tool
refuses bad input by raising the contract's `ToolError` with a message the caller can act
on. Their JSON Schemas are the contract's (services/contract/tool_schema.py); the registry
(services/tools/registry.py) binds each to its function.
"""
