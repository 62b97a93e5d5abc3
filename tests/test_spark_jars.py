"""The jar resolution's output: Ivy's report (printed by the JVM, a child process) stays in a log unless it fails."""
from __future__ import annotations

import subprocess

import pytest

from engine.spark.jars import quiet_output


def test_child_output_goes_to_the_log_and_nowhere_else(tmp_path, capfd):
    log = tmp_path / "resolve.log"
    with quiet_output(log):
        subprocess.run(["sh", "-c", "echo ':: resolving dependencies'; echo 'found io.delta#delta-spark' >&2"],
                       check=True)
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""
    assert log.read_text().splitlines() == [":: resolving dependencies", "found io.delta#delta-spark"]


def test_on_failure_the_log_tail_is_shown_and_the_error_propagates(tmp_path, capfd):
    log = tmp_path / "resolve.log"
    with pytest.raises(RuntimeError, match="no jar"):
        with quiet_output(log, tail_lines=2):
            subprocess.run(["sh", "-c", "echo one; echo two; echo 'NOT FOUND io.delta#delta-spark' >&2"], check=True)
            raise RuntimeError("no jar")
    out, err = capfd.readouterr()
    assert out == "" and err == "two\nNOT FOUND io.delta#delta-spark\n"
