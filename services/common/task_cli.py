"""`inloop task run`: send one agent task to either route and print its result.

    inloop task run "What is 17 * 23?" --tool calculator                 # the runtime runs the loop
    inloop task run "What is 17 * 23?" --tool calculator --route external  # the controller does

--target follows the route: the runtime (127.0.0.1:50051, $INLOOP_RUNTIME) for internal, the
controller (127.0.0.1:50071, $INLOOP_CONTROLLER) for external. A call that cannot reach it
prints one line saying what to start or set (services/common/client_cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys


def build_request(args: argparse.Namespace):
    from inloop.v1 import runtime_pb2 as pb
    req = pb.TaskRequest(task_id=args.task_id or "", tools=args.tool or [], tool_choice=args.tool_choice or "",
                         max_steps=args.max_steps, deadline_ms=args.deadline_ms,
                         messages=[pb.ChatMessage(role="user", content=args.question)],
                         sampling=pb.SamplingParams(max_tokens=args.max_tokens))
    req.policy.CopyFrom(pb.RoutePolicy(per_try_timeout_ms=args.per_try_timeout_ms, attempts=args.attempts,
                                       backoff_base_ms=20, backoff_max_ms=200))
    req.fault.CopyFrom(pb.FaultSpec(abort=args.fault_abort or "", delay=args.fault_delay or "",
                                    key=args.fault_key or ""))
    if args.gate_threshold is not None:
        req.gate.CopyFrom(pb.GateConfig(enabled=True, statistic=args.gate_statistic, threshold=args.gate_threshold))
    return req


def _cmd(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from inloop.services.common.client_cli import ROUTE_SERVICE, route_target, rpc_failure_line
    from inloop.services.common.grpc_client import make_channel
    from inloop.services.common.security import SecurityError, client_security_from_args
    from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc

    try:
        security = client_security_from_args(args)
    except SecurityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = route_target(args.route, args.target)
    with make_channel(target, security) as channel:
        stub = (runtime_pb2_grpc.RuntimeStub if args.route == "internal" else controller_pb2_grpc.ControllerStub)(channel)
        try:
            result = stub.RunTask(build_request(args), timeout=args.deadline_ms / 1e3 + 5)
        except grpc.RpcError as exc:
            print(rpc_failure_line(exc, target, ROUTE_SERVICE[args.route]), file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(MessageToDict(result, preserving_proto_field_name=True), indent=2))
    else:
        for s in result.steps:
            what = s.text if s.kind == "model" else (s.arguments_json or s.detail)
            print(f"  {s.kind:5} {s.name:14} {s.status:5} x{s.attempts} {s.latency_ms:8.1f} ms  "
                  f"{s.error_type + ' ' if s.error_type else ''}{what[:100]!r}", file=sys.stderr)
        print(result.answer if result.ok else f"FAILED {result.error_type}: {result.error_message}")
    return 0 if result.ok else 3


def register(sub) -> None:
    from inloop.services.common.client_cli import ShownDefaults, add_max_tokens, default_address

    p = sub.add_parser("task", help="run one agent task on either route")
    tsub = p.add_subparsers(dest="task_command", metavar="CMD")
    r = tsub.add_parser("run", help="send a TaskRequest to Runtime.RunTask or Controller.RunTask",
                        description="Send one agent task to the runtime (--route internal: the tool loop runs "
                                    "in the runtime) or the controller (--route external: the loop calls the "
                                    "runtime and the tools service over the network) and print the answer; "
                                    "the steps go to stderr. Exit 0 ok, 1 no answer, 2 bad flags, 3 task failed.",
                        formatter_class=ShownDefaults)
    r.add_argument("question", help="the user message")
    r.add_argument("--route", choices=("internal", "external"), default="internal",
                   help="internal: the runtime runs the loop; external: the controller does")
    r.add_argument("--target", default=None,
                   help=f"where to send it; follows --route: internal -> the runtime ($INLOOP_RUNTIME, else "
                        f"{default_address('runtime')}), external -> the controller ($INLOOP_CONTROLLER, else "
                        f"{default_address('controller')})")
    r.add_argument("--tool", action="append", help="offer a tool (repeatable): search, extract_receipt, "
                                                   "summarize, calculator, kv; none by default")
    r.add_argument("--tool-choice", default="", help="none | auto | required | a tool name, for the first step "
                                                     "('' = auto when tools are offered)")
    r.add_argument("--task-id", default="", help="the task's id, also its kv session ('' = one is made up)")
    r.add_argument("--max-steps", type=int, default=4, help="model steps at most (tool calls in between)")
    add_max_tokens(r)
    r.add_argument("--deadline-ms", type=float, default=60000, help="the whole task's deadline")
    r.add_argument("--per-try-timeout-ms", type=float, default=0,
                   help="external route: each hop try's timeout (0 = the task's remaining time)")
    r.add_argument("--attempts", type=int, default=1, help="external route: tries per hop (1 = no retry)")
    r.add_argument("--fault-abort", help='external route: abort fault, e.g. "every=2;status=UNAVAILABLE"')
    r.add_argument("--fault-delay", help='external route: delay fault, e.g. "every=3;ms=900"')
    r.add_argument("--fault-key", help="the fault counters' key (one per run keeps runs apart)")
    r.add_argument("--gate-threshold", type=float, help="turn the uncertainty gate on at this threshold "
                                                        "(off by default)")
    r.add_argument("--gate-statistic", default="mean_logprob", choices=("mean_logprob", "min_margin"),
                   help="what the gate compares with --gate-threshold")
    r.add_argument("--json", action="store_true", help="print the whole TaskResult as JSON")
    from inloop.services.common.config import add_client_security_options
    add_client_security_options(r)
    r.set_defaults(func=_cmd)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
