"""Layered serve configuration (services/common/config.py over settings.py) and `inloop config show`.

Each layer is checked against the one below it: default < TOML [common] < TOML [service]
< env INLOOP_* < flag, on the runtime's settings plus one added for the test, and on the real
serve commands. Bad values and unknown keys must name where they came from.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import pytest

from inloop.services.cli import build_parser, main
from inloop.services.common.config import ConfigError, effective, export_otlp_endpoint, layered
from inloop.services.common.serve_settings import serve_scope, serve_settings
from inloop.services.common.settings import Setting, add_arguments, given_flags, resolve

# the runtime's settings and one more, declared the same way (the mechanism is not per key)
SETTINGS = serve_settings("runtime") + [Setting("late_flag", 1.5, "a setting added for the test", type=float)]
_scope = serve_scope("runtime")
SCOPE = dataclasses.replace(_scope, known={t: keys | ({"late_flag"} if t in ("runtime", "common") else set())
                                            for t, keys in _scope.known.items()})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inloop runtime serve")
    add_arguments(p, SETTINGS, SCOPE)
    return p


def resolved(argv: list[str], env: dict[str, str] | None = None):
    given, extras = make_parser().parse_known_args(argv)
    assert extras == []
    return resolve(SETTINGS, given_flags(given, SETTINGS), SCOPE, env or {})


def write_toml(tmp_path, text: str) -> str:
    path = tmp_path / "inloop.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def clean_env(monkeypatch):
    """No INLOOP_* or OTLP variables from the machine leak into a test."""
    for name in list(os.environ):
        if name.startswith(("INLOOP_", "OTEL_EXPORTER_OTLP")):
            monkeypatch.delenv(name)
    return monkeypatch


# ---- precedence, one layer over the next ---------------------------------------------------
def test_defaults_when_nothing_is_given():
    r = resolved([])
    assert r.values["port"] == 50051 and r.values["max_queue"] == 16 and r.values["plaintext"] is False
    assert r.values["late_flag"] == 1.5
    assert set(r.sources.values()) == {"default"}


def test_every_layer_overrides_the_one_below(tmp_path):
    cfg = write_toml(tmp_path, """
[common]
port = 1001
max_queue = 1
host = "127.0.0.2"
late_flag = 2.5
[runtime]
port = 1002
max_queue = 2
""")
    env = {"INLOOP_PORT": "1003", "INLOOP_CONFIG": cfg}
    r = resolved(["--port", "1004"], env)
    assert (r.values["port"], r.sources["port"]) == (1004, "flag")

    r = resolved([], env)
    assert (r.values["port"], r.sources["port"]) == (1003, "env INLOOP_PORT")
    assert (r.values["max_queue"], r.sources["max_queue"]) == (2, f"{cfg} [runtime]")
    assert (r.values["host"], r.sources["host"]) == ("127.0.0.2", f"{cfg} [common]")
    assert (r.values["late_flag"], r.sources["late_flag"]) == (2.5, f"{cfg} [common]")
    assert (r.values["backend"], r.sources["backend"]) == ("auto", "default")
    assert (r.values["config"], r.sources["config"]) == (cfg, "env INLOOP_CONFIG")

    r = resolved(["--config", cfg], {})
    assert r.sources["config"] == "flag" and r.values["port"] == 1002


def test_values_are_typed_by_the_option(tmp_path):
    env = {"INLOOP_MAX_QUEUE": " 32 ", "INLOOP_PLAINTEXT": "yes", "INLOOP_LATE_FLAG": "0.25",
           "INLOOP_BACKEND": "cpu"}
    r = resolved([], env)
    assert r.values["max_queue"] == 32 and r.values["plaintext"] is True
    assert r.values["late_flag"] == 0.25 and r.values["backend"] == "cpu"
    cfg = write_toml(tmp_path, "[runtime]\nplaintext = true\nlate_flag = 3\ngrace_s = 2\n")
    r = resolved(["--config", cfg])
    assert r.values["plaintext"] is True and r.values["late_flag"] == 3.0 and isinstance(r.values["grace_s"], float)
    # a flag beats a true value below it, in both directions
    assert resolved(["--config", cfg, "--no-plaintext"]).values["plaintext"] is False


def test_a_command_runs_with_every_setting_filled_and_its_sources(clean_env):
    clean_env.setenv("INLOOP_MAX_QUEUE", "9")
    parser = make_parser()
    args = layered("runtime", parser, lambda a: a)(parser.parse_args(["--port", "0"]))
    assert args.port == 0 and args.max_queue == 9 and args.log_level == "info"
    assert args.config_sources["port"] == "flag" and args.config_sources["max_queue"] == "env INLOOP_MAX_QUEUE"


def test_the_real_serve_commands_are_layered(clean_env):
    clean_env.setenv("INLOOP_MAX_CONCURRENCY", "3")
    clean_env.setenv("INLOOP_METRICS_PORT", "-1")
    ran = []
    clean_env.setattr("inloop.services.tools.service.cli.cmd_serve", ran.append)
    args = build_parser().parse_args(["tools", "serve", "--port", "0"])
    args.func(args)
    assert ran == [args] and args.port == 0 and args.max_concurrency == 3 and args.metrics_port == -1
    assert args.config_sources["max_concurrency"] == "env INLOOP_MAX_CONCURRENCY"
    for service, port in (("runtime", 50051), ("tools", 50061), ("controller", 50071)):
        values = effective(service, {}, env={}).values
        assert {"host", "port", "log_level", "grace_s", "tls_cert", "tls_key", "tls_ca", "plaintext",
                "token_file", "otlp_endpoint", "config"} <= set(values), service
        assert values["port"] == port


def test_help_names_the_env_form_and_default(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "[env INLOOP_MAX_QUEUE; default: 16]" in text
    assert "[env INLOOP_LATE_FLAG; default: 1.5]" in text  # added after the common options
    assert "[env INLOOP_TOKEN_FILE; default: unset]" in text


# ---- bad values and files name their source ------------------------------------------------
@pytest.mark.parametrize("env, message", [
    ({"INLOOP_PORT": "abc"}, "INLOOP_PORT='abc' (env): not an int"),
    ({"INLOOP_LATE_FLAG": "fast"}, "INLOOP_LATE_FLAG='fast' (env): not a float"),
    ({"INLOOP_BACKEND": "gpu"}, "INLOOP_BACKEND='gpu' (env): not one of cpu, cuda, auto"),
    ({"INLOOP_PLAINTEXT": "maybe"}, "INLOOP_PLAINTEXT='maybe' (env): not a boolean"),
])
def test_a_bad_env_value_names_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        resolved([], env)
    assert message in str(err.value)


@pytest.mark.parametrize("toml, message", [
    ("[runtime]\nport = 'abc'\n", "port='abc' ({path} [runtime]): not an int"),
    ("[common]\nmax_queue = 1.5\n", "max_queue=1.5 ({path} [common]): not an int"),
    ("[runtime]\nplaintext = 'sometimes'\n", "plaintext='sometimes' ({path} [runtime]): not a boolean"),
    ("[runtime]\nbackend = 'tpu'\n", "backend='tpu' ({path} [runtime]): not one of"),
    ("[runtime]\nmax_queeu = 3\nport = 1\n", "{path} [runtime]: unknown key(s) max_queeu"),
    ("[runtime]\nmax-queue = 3\n", "max-queue (did you mean max_queue?)"),
    ("[common]\nnot_a_key = 1\n", "{path} [common]: unknown key(s) not_a_key"),
    ("[tools]\nmax_queue = 3\n", "{path} [tools]: unknown key(s) max_queue"),
    ("[runtime]\nconfig = 'other.toml'\n", "{path} [runtime]: unknown key(s) config"),
    ("[runtimes]\nport = 1\n", "unknown table(s) [runtimes]"),
    ("port = 1\n", "key(s) port outside a table"),
    ("[runtime\nport = 1\n", "not valid TOML"),
])
def test_a_bad_toml_file_is_named(tmp_path, toml, message):
    path = write_toml(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        resolved(["--config", path])
    assert message.format(path=path) in str(err.value)


def test_common_table_may_hold_another_services_keys(tmp_path):
    # one file for a whole host: the runtime must not reject the tools' settings
    path = write_toml(tmp_path, "[common]\nmax_concurrency = 8\nfault_abort = 'off'\n"
                                "[tools]\ncorpus = 'x.jsonl'\n[controller]\nruntime = '10.0.0.5:50051'\n")
    r = resolved(["--config", path])
    assert r.values["port"] == 50051


def test_a_missing_config_file_names_its_origin():
    with pytest.raises(ConfigError, match=r"/nope\.toml \(env INLOOP_CONFIG\): not found"):
        resolved([], {"INLOOP_CONFIG": "/nope.toml"})


def test_a_bad_value_makes_the_serve_command_exit_2(clean_env, capsys):
    clean_env.setenv("INLOOP_PORT", "abc")
    with pytest.raises(SystemExit) as exc:
        main(["tools", "serve"])
    assert exc.value.code == 2
    assert "INLOOP_PORT='abc' (env): not an int" in capsys.readouterr().err


# ---- otlp_endpoint ---------------------------------------------------------------------------
def test_otlp_endpoint_reads_the_standard_variable_and_is_exported(clean_env):
    r = resolved([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert (r.values["otlp_endpoint"], r.sources["otlp_endpoint"]) == (
        "http://collector:4317", "env OTEL_EXPORTER_OTLP_ENDPOINT")
    r = resolved([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "INLOOP_OTLP_ENDPOINT": "http://b:4317"})
    assert r.values["otlp_endpoint"] == "http://b:4317"
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")  # so that the teardown removes what is exported next
    export_otlp_endpoint(argparse.Namespace(otlp_endpoint="http://c:4317"))
    assert os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://c:4317"


# ---- inloop config show ----------------------------------------------------------------------
def test_config_show_prints_every_key_with_its_source(tmp_path, clean_env, capsys):
    path = write_toml(tmp_path, "[common]\ngrace_s = 2.0\ntoken_file = '/etc/inloop/token'\n"
                                "[controller]\nruntime = '10.0.0.5:50051'\n")
    clean_env.setenv("INLOOP_MAX_CONCURRENCY", "7")
    assert main(["config", "show", "--service", "controller", "--config", path, "--json",
                 "--", "--port", "0"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["port"] == {"value": 0, "source": "flag"}
    assert shown["max_concurrency"] == {"value": 7, "source": "env INLOOP_MAX_CONCURRENCY"}
    assert shown["runtime"] == {"value": "10.0.0.5:50051", "source": f"{path} [controller]"}
    assert shown["grace_s"] == {"value": 2.0, "source": f"{path} [common]"}
    assert shown["token_file"]["source"] == f"{path} [common]"
    assert shown["tools"] == {"value": "127.0.0.1:50061", "source": "default"}
    assert shown["config"] == {"value": path, "source": "flag"}
    assert set(shown) == {s.key for s in serve_settings("controller")}

    assert main(["config", "show", "--service", "controller", "--config", path]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["key", "value", "source"]
    assert any(line.split()[:2] == ["max_concurrency", "7"] and line.endswith("env INLOOP_MAX_CONCURRENCY")
               for line in table)


def test_config_show_reports_bad_values(clean_env, capsys):
    clean_env.setenv("INLOOP_MAX_QUEUE", "many")
    assert main(["config", "show", "--service", "runtime"]) == 2
    assert "INLOOP_MAX_QUEUE='many' (env): not an int" in capsys.readouterr().err
