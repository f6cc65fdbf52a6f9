"""The one settings mechanism (services/common/settings.py) that the services, the lab and the
profiles declare their keys with: flags from declarations, typing, table-scoped keys, help."""
from __future__ import annotations

import argparse

import pytest

from inloop.services.common.settings import ConfigError, Scope, Setting, add_arguments, given_flags, resolve

SETTINGS = [
    Setting("name", "x", "a name", table="a"),
    Setting("count", 2, "how many", type=int, table="a"),
    Setting("tags", ("t1",), "tags", type=list, table="b", flag="--tag", metavar="TAG"),
    Setting("fast", False, "go fast", type=bool, table="b"),
    Setting("safe", True, "stay safe", type=bool, negatable=True, table="b"),
]
SCOPE = Scope("demo", known={"a": frozenset({"name", "count"}), "b": frozenset({"tags", "fast", "safe"})},
              env_prefix="DEMO_", describe_defaults=False)


def parse(argv):
    p = argparse.ArgumentParser(prog="demo")
    add_arguments(p, SETTINGS, SCOPE)
    return given_flags(p.parse_args(argv), SETTINGS)


def write(tmp_path, text):
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return str(path)


def test_absent_flags_are_not_given_and_given_ones_are_typed():
    assert parse([]) == {}
    assert parse(["--count", "3", "--tag", "a", "--tag", "b", "--fast", "--no-safe"]) == {
        "count": 3, "tags": ["a", "b"], "fast": True, "safe": False}


def test_each_key_is_read_from_its_own_table_below_env_and_flags(tmp_path):
    path = write(tmp_path, '[a]\nname = "file"\ncount = 5\n[b]\ntags = ["f1", "f2"]\nfast = true\n')
    r = resolve(SETTINGS, parse(["--count", "7"]), SCOPE, {"DEMO_TAGS": "e1,e2"}, config=path)
    assert r.values == {"name": "file", "count": 7, "tags": ["e1", "e2"], "fast": True, "safe": True}
    assert r.sources == {"name": f"{path} [a]", "count": "flag", "tags": "env DEMO_TAGS", "fast": f"{path} [b]",
                         "safe": "default"}


@pytest.mark.parametrize("text, message", [
    ("[b]\nname = 'in the wrong table'\n", "[b]: unknown key(s) name"),
    ("[c]\n", "unknown table(s) [c]; tables are [a], [b]"),
    ("[a]\ncount = 'two'\n", "count='two' ({path} [a]): not an int"),
    ("[b]\ntags = 1\n", "tags=1 ({path} [b]): not a list"),
    ("count = 1\n", "key(s) count outside a table"),
])
def test_bad_files_name_the_file_the_table_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        resolve(SETTINGS, {}, SCOPE, {}, config=path)
    assert message.format(path=path) in str(err.value)


def test_help_is_the_declared_text_or_names_env_and_default(capsys):
    p = argparse.ArgumentParser(prog="demo")
    add_arguments(p, SETTINGS[:2], SCOPE)
    add_arguments(p, [Setting("other", None, "unset here")], Scope("svc"))
    text = " ".join(p.format_help().split())
    assert "--count COUNT how many --other OTHER unset here [env INLOOP_OTHER; default: unset]" in text
