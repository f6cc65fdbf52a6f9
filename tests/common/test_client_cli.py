"""The client commands guide: targets follow the route, every flag is documented with its
default, one --max-tokens default, INLOOP_RUNTIME (its old name warns), and a call that cannot
reach its service prints one line saying what to start or set, not a raw gRPC error."""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from inloop.services.cli import build_parser, main
from inloop.services.common.client_cli import CLIENT_MAX_TOKENS, has_default, route_target, service_target

REPO = Path(__file__).resolve().parents[2]
CLIENT_COMMANDS = (("task", "run"), ("generate",), ("health",))


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("INLOOP_RUNTIME", "INLOOP_RUNTIME_TARGET", "INLOOP_CONTROLLER", "INLOOP_TLS_CA",
                 "INLOOP_TLS_CERT", "INLOOP_TLS_KEY", "INLOOP_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("path", CLIENT_COMMANDS, ids=" ".join)
def test_every_flag_has_help_and_its_default_is_shown(path):
    parser = subparser(*path)
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 8, (path, action.dest)
        if action.option_strings and has_default(action):
            help_line = parser._get_formatter()._expand_help(action)
            assert "default" in help_line.lower(), (path, action.dest, help_line)
    assert "--target" in text or path == ("health",)


def test_max_tokens_is_128_for_the_client_commands_and_the_loadgen_says_its_own(clean_env):
    assert CLIENT_MAX_TOKENS == 128
    assert build_parser().parse_args(["task", "run", "q"]).max_tokens == 128
    assert build_parser().parse_args(["generate", "q"]).max_tokens == 128
    for cmd in ("compare", "matrix", "loops"):
        loadgen = subparser("loadgen", cmd)
        assert loadgen.get_default("max_tokens") == 64
        help_text = next(a.help for a in loadgen._actions if a.dest == "max_tokens")
        assert "default 64, the loadgen's per-step default" in help_text and "default to 128" in help_text


def test_the_target_follows_the_route(clean_env):
    args = build_parser().parse_args(["task", "run", "q", "--route", "external"])
    assert args.target is None and route_target(args.route, args.target) == "127.0.0.1:50071"
    assert route_target("internal") == "127.0.0.1:50051"
    clean_env.setenv("INLOOP_CONTROLLER", "10.0.0.9:50071")
    clean_env.setenv("INLOOP_RUNTIME", "10.0.0.5:50051")
    assert route_target("external") == "10.0.0.9:50071" and route_target("internal") == "10.0.0.5:50051"
    assert route_target("external", "h:1") == "h:1"


def test_inloop_runtime_is_read_and_its_old_name_warns(clean_env, capsys):
    clean_env.setenv("INLOOP_RUNTIME_TARGET", "old:50051")
    assert service_target("runtime") == "old:50051"
    assert "INLOOP_RUNTIME_TARGET is deprecated; set INLOOP_RUNTIME" in capsys.readouterr().err
    clean_env.setenv("INLOOP_RUNTIME", "new:50051")
    assert service_target("runtime") == "new:50051"
    assert capsys.readouterr().err == ""  # the new name wins, silently
    build_parser()  # building the CLI reads no env: no warning for commands that do not connect
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, says", [
    (["task", "run", "q", "--route", "external"], "no inloop controller answers at 127.0.0.1:{port} (connection "
                                                  "refused); start it (`inloop controller serve`)"),
    (["task", "run", "q"], "no inloop runtime answers at 127.0.0.1:{port} (connection refused); start it "
                           "(`inloop runtime serve`)"),
    (["generate", "q"], "no inloop runtime answers at 127.0.0.1:{port} (connection refused); start it "
                        "(`inloop runtime serve`)"),
], ids=["task-external", "task-internal", "generate"])
def test_a_refused_connection_prints_one_line_saying_what_to_do(clean_env, capsys, argv, says):
    port = free_port()  # nothing listens there
    assert main([*argv, "--target", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert says.format(port=port) in err and "--target" in err, err


def test_the_wrong_service_is_named_and_the_right_default_given(clean_env, capsys):
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:  # a runtime-like address that serves no Controller: what --route external once hit
        assert main(["task", "run", "q", "--route", "external", "--target", f"127.0.0.1:{port}"]) == 1
    finally:
        server.stop(0)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"127.0.0.1:{port} is not a controller" in err and "default 127.0.0.1:50071" in err


def test_health_on_a_refused_port_says_which_service_to_start(clean_env):
    done = subprocess.run([sys.executable, "-m", "inloop.services.cli", "health", "127.0.0.1:50061", "--wait",
                           "0.3"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 0:
        pytest.skip("a tools service is listening on 127.0.0.1:50061 on this machine")
    assert "start `inloop tools serve`" in done.stderr, done.stderr
