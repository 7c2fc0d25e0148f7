"""The shipped runner configurations parse, and the worker image pins setup.py's Beam."""
import re
from pathlib import Path

import pytest

from gridtsne import flagfiles

ROOT = Path(__file__).resolve().parents[1]


def test_flags_files_expand_in_place_and_later_flags_win(tmp_path, monkeypatch):
    f = tmp_path / "x.flags"
    f.write_text("# comment\n--runner=PortableRunner\n--job_endpoint=${EP:-embed}  # trailing\n\n")
    argv = ["--input", "a", "--flags_file", str(f), "--runner=DirectRunner"]
    assert flagfiles.expand_flags_files(argv) == [
        "--input", "a", "--runner=PortableRunner", "--job_endpoint=embed", "--runner=DirectRunner"]
    monkeypatch.setenv("EP", "localhost:8099")
    assert flagfiles.expand_flags_files([f"--flags_file={f}"])[1] == "--job_endpoint=localhost:8099"


def test_missing_variable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    f = tmp_path / "y.flags"
    f.write_text("--project=${NO_SUCH_VAR_X}\n")
    with pytest.raises(ValueError, match="NO_SUCH_VAR_X"):
        flagfiles.expand_flags_files(["--flags_file", str(f)])


@pytest.mark.parametrize("name", ["direct", "portable", "flink", "dataflow-gpu"])
def test_every_config_names_its_runner(name, monkeypatch):
    for var in ("FLINK_MASTER", "WORKER_IMAGE", "GCP_PROJECT", "GCS_TEMP"):
        monkeypatch.setenv(var, "x")
    flags = flagfiles.expand_flags_files(["--flags_file", str(ROOT / "configs" / f"{name}.flags")])
    runners = [f.split("=", 1)[1] for f in flags if f.startswith("--runner=")]
    assert runners == [{"direct": "DirectRunner", "portable": "PortableRunner",
                        "flink": "FlinkRunner", "dataflow-gpu": "DataflowRunner"}[name]]


def test_dockerfile_pins_the_same_beam_as_setup():
    setup_pin = re.search(r'"apache-beam==([\d.]+)"', (ROOT / "setup.py").read_text()).group(1)
    docker_pin = re.search(r"ARG BEAM_VERSION=([\d.]+)", (ROOT / "Dockerfile").read_text()).group(1)
    constraint = re.search(r"^apache-beam==([\d.]+)$", (ROOT / "constraints.txt").read_text(),
                           re.M).group(1)
    assert setup_pin == docker_pin == constraint
