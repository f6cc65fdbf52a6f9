"""The contract: what crosses a layer, and nothing else. It imports nothing of ours.

    errors.py       the error kinds (InvalidRequest, ToolError, ...) and the typed hop errors
    generation.py   a model request and its result: SamplingParams, GenerateRequest, TokenStats,
                    UncertaintySummary, GenerateResult, the request limits
    task.py         an agent task and its result: TaskSpec, ModelReply, ToolReply, Step, TaskOutcome
    ports.py        the agent loop's two ports (ModelPort, ToolPort)
    tool_calls.py   the tool-call text format both routes parse (Hermes <tool_call>{...}</tool_call>)
    tool_schema.py  the tool registry's schema: names, JSON Schemas, argument checks
    faults.py       the fault-spec vocabulary (Envoy/Istio abort/delay) and its header names
    backend.py      the Backend interface the forward pass is written against, and KVCache
    step_runner.py  the StepRunner interface between the decode loop and a backend
    validation.py   the checks every entry point runs on what a caller sends (one answer per bad input)

Layers above (model and backends, engine, the tools' functions, the services, loadgen) import
from here; `lint-imports` checks that it imports none of them.
"""
