"""The command line: every command's --help lists its real flags, an empty URL flag is an
error (never the working directory), and errors print as one line."""
import os

import pytest

from gridtsne import cli
from pipelines import run as job


@pytest.mark.parametrize("command, flags", [
    ("run", ["--input", "--output", "--keep_versions", "--version_id", "--model", "--perplexity",
             "--cell", "--labels", "--storage_options", "--verbose"]),
    ("demo", ["--output", "--stable", "--model", "--cell"]),
    ("embed", ["--input", "--output", "--model", "--batch_size"]),
    ("layout", ["--vectors", "--output", "--perplexity", "--grid", "--verbose"]),
    ("render", ["--vectors", "--layout", "--output", "--cell", "--tile", "--labels"]),
])
def test_each_command_lists_its_flags(command, flags, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gridtsne {command}"), out[:200]
    for flag in flags:
        assert flag in out, (command, flag)
    assert "Apache Beam untouched" in out
    assert os.listdir(tmp_path) == []  # asking for help runs nothing (the demo writes nothing)


@pytest.mark.parametrize("argv", [["--input="], ["--input", ""], ["--input", "  "],
                                  ["--input", "x", "--manifest="], ["--input", "x", "--labels="]])
def test_an_empty_url_flag_is_an_error_not_the_working_directory(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "private.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / "map"
    with pytest.raises(ValueError, match="is empty"):
        job.run([*argv, "--output", str(out)])
    assert not out.exists()
    with pytest.raises(ValueError, match="--output is empty"):
        job.run(["--input", str(tmp_path), "--output="])


def test_an_error_is_one_line_and_verbose_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["layout", "--vectors", str(tmp_path / "none"), "--output",
                     str(tmp_path / "o"), "--progress", "off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gridtsne layout: error: FileNotFoundError: no Parquet files")
    assert "Traceback" not in err[0]
    with pytest.raises(FileNotFoundError):
        cli.main(["layout", "--vectors", str(tmp_path / "none"), "--output", str(tmp_path / "o"),
                  "--progress", "off", "--verbose"])
