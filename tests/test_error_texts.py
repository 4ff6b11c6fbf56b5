"""Error and advice texts read as a person would write them (issue 17, item 5): no ``got None``
tail on a message that has no value to show, and no "1808.4x the traffic"."""

from __future__ import annotations

import subprocess
import sys

from banditroute.errors import ConfigError
from ope.gate_result import _times


def test_report_without_a_candidate_names_the_option_without_a_none(tmp_path):
    out = subprocess.run([sys.executable, "-m", "banditroute", "report", "--logs", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "--candidate give at least one NAME=SPEC" in out.stderr
    assert "got None" not in out.stderr


def test_a_message_without_a_value_has_no_got_tail():
    assert str(ConfigError("serve", problem="needs the service extra")) == "serve needs the service extra"


def test_traffic_factors_are_rounded_as_a_person_would_say_them():
    assert [_times(f) for f in (1.04, 9.96, 10.4, 99.4, 100.0, 1808.4)] == [
        "about 1.0x", "about 10.0x", "about 10x", "about 99x", "more than 100x", "more than 100x"]


def test_an_unknown_router_keyword_names_router_and_the_closest_parameter(tmp_path):
    import pytest

    import banditroute as br
    from banditroute.errors import UnknownParameterError

    with pytest.raises(UnknownParameterError, match=r"^explore is not a parameter of Router \(did you mean "
                                                    r"'exploration'\?\), got 0\.1$") as err:
        br.Router([br.Profile("a")], explore=0.1)
    assert isinstance(err.value, TypeError) and err.value.field == "explore"
    with pytest.raises(TypeError, match=r"^zzz is not a parameter of Router, got 1$"):
        br.Router([br.Profile("a")], zzz=1)
    routes = tmp_path / "routes.toml"
    routes.write_text('[[profiles]]\nname = "a"\n')
    with pytest.raises(UnknownParameterError, match="did you mean 'policy'"):
        br.Router.from_config(routes, polcy="linear")
    assert br.Router(profiles=[br.Profile("a")], exploration=0.1).config.exploration == 0.1
