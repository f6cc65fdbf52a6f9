"""Fault profiles as TOML files."""
import re

import pytest

from inloop.loadgen.profiles import BUILTIN, ProfileError, load_profile, load_profiles


def test_the_six_builtin_profiles_load():
    assert BUILTIN == ("p00", "p01", "p02", "p03", "p04", "p05")
    profiles = load_profiles(None)
    assert [p.name for p in profiles] == list(BUILTIN)
    assert not profiles[0].abort and not profiles[0].delay  # p00 injects nothing


def test_p04_and_p05_are_what_the_matrix_promises():
    p04, p05 = load_profile("p04"), load_profile("p05")
    for p in (p04, p05):
        assert p.abort == "every=2;status=UNAVAILABLE" and p.delay == "every=3;ms=900"
        assert p.policy["per_try_timeout_ms"] == 250 and p.policy["backoff_base_ms"] == 20
    assert p04.policy["attempts"] == 2 and p05.policy["attempts"] == 3   # 1 and 2 retries
    req_policy, fault = p04.route_policy(), p04.fault_spec("run-1")
    assert req_policy.attempts == 2 and list(req_policy.retry_on) == ["UNAVAILABLE", "DEADLINE_EXCEEDED"]
    assert fault.key == "run-1" and fault.abort == p04.abort


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nretries = 2\n', "x.toml: unknown key(s) retries (top-level keys are description, name"),
    ('name = "x"\n[policy]\nattempts = -1\n', "policy.attempts must be a number >= 0"),
    ('name = "x"\n[policy]\ntimeout = 1\n', "x.toml [policy]: unknown key(s) timeout"),
    ('name = "x"\n[policy]\nattempts = "two"\n', "attempts='two' ({path} [policy]): not an int"),
    ('name = "x"\n[fault]\nabort = "every=0;status=UNAVAILABLE"\n', "fault.abort"),
    ('name = "x"\n[fault]\nreset = "x"\n', "x.toml [fault]: unknown key(s) reset"),
    ('name = \n', "x.toml"),
])
def test_bad_profiles_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=re.escape(message.format(path=path))):
        load_profile(str(path))


def test_unknown_names_and_duplicates():
    with pytest.raises(ProfileError, match="use one of p00"):
        load_profile("p99")
    with pytest.raises(ProfileError, match="two profiles are named"):
        load_profiles(["p00", "p00"])
