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
