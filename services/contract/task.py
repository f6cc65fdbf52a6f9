"""An agent task and what became of it: the agent loop's inputs and outputs on both routes.

The servers convert TaskRequest/TaskResult (wire) to and from these (common/task_convert.py);
the loop (common/agent_loop.py) and its ports (ports.py) see only these.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from inloop.services.contract.errors import TaskError
from inloop.services.contract.generation import SamplingParams, UncertaintySummary


@dataclass(frozen=True)
class GateConfig:
    """The uncertainty gate: when a plain answer's statistic is under the threshold, branch
    once to `tool` instead of answering."""

    enabled: bool = False
    statistic: str = "mean_logprob"   # or "min_margin"
    threshold: float = -1.0
    tool: str = "search"

    def statistic_of(self, uncertainty: UncertaintySummary | None) -> float | None:
        if uncertainty is None:
            return None
        return uncertainty.min_margin if self.statistic == "min_margin" else uncertainty.mean_logprob


@dataclass
class TaskSpec:
    task_id: str
    messages: list[dict]
    tools: list[dict]                 # OpenAI-style definitions of the offered tools
    tool_choice: str = "auto"
    max_steps: int = 4
    sampling: SamplingParams = field(default_factory=SamplingParams)  # for every model step
    deadline: float = 0.0             # time.monotonic() by which the task must end
    gate: GateConfig = field(default_factory=GateConfig)
    setup: dict = field(default_factory=dict)
    family: str = ""

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()


def new_task_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class ModelReply:
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uncertainty: UncertaintySummary | None = None
    attempts: int = 1


@dataclass
class ToolReply:
    result: dict
    attempts: int = 1


@dataclass
class Step:
    kind: str                  # model | tool | gate
    name: str
    status: str = "ok"
    error_type: TaskError | str = ""
    detail: str = ""
    attempts: int = 1
    latency_ms: float = 0.0
    start_ms: float = 0.0
    arguments: dict | None = None
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uncertainty: UncertaintySummary | None = None


@dataclass
class TaskOutcome:
    task_id: str
    ok: bool
    answer: str
    steps: list[Step]
    error_type: TaskError | str = ""
    error_message: str = ""
    latency_ms: float = 0.0
    finish_reason: str = ""  # the last model step's: stop | length (truncated) | tool_calls | cancelled

    @property
    def retries(self) -> int:
        return sum(max(s.attempts - 1, 0) for s in self.steps)

    @property
    def uncertainty(self) -> UncertaintySummary | None:
        """Over every model step, weighted by its tokens (each step's summary covers its own)."""
        return UncertaintySummary.combined([(s.uncertainty, max(s.completion_tokens, 1)) for s in self.steps
                                            if s.kind == "model" and s.uncertainty is not None])
