"""CPU threads: --threads on every command, OMP_NUM_THREADS respected, else the usable cores; and --version."""
from __future__ import annotations

import argparse
import os
from importlib import metadata

import pytest
import torch

from kvideo import threads
from kvideo.cli import build_parser, main


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_requested_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.choose_threads(3) == 3
    with pytest.raises(ValueError, match="threads=0"):
        threads.choose_threads(0)


def test_omp_num_threads_is_left_to_torch(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads() is None


def test_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads.choose_threads() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    assert threads.choose_threads() == 64


def leaf_parsers(parser: argparse.ArgumentParser, words=()):
    """(command words, parser) of every command that runs, nested ones included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaf_parsers(sub, (*words, name))


def test_every_command_takes_threads_before_and_after_its_name():
    parser = build_parser()
    leaves = list(leaf_parsers(parser))
    assert len(leaves) > 10
    for words, sub in leaves:
        assert "--threads" in sub._option_string_actions, words
    assert parser.parse_args(["--threads", "2", "info", "x.pt"]).threads == 2
    assert parser.parse_args(["info", "x.pt", "--threads", "3"]).threads == 3
    assert parser.parse_args(["generate", "a cat", "-o", "c.mp4", "--threads", "1"]).threads == 1
    assert not hasattr(parser.parse_args(["info", "x.pt"]), "threads")


@pytest.mark.parametrize("value, message", [("0", "expected an integer >= 1, got '0'"),
                                            ("two", "expected an integer, got 'two'")])
def test_bad_thread_count_is_a_one_line_error(value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "x.pt", "--threads", value])
    assert exit_info.value.code == 2
    assert f"kvideo info: error: argument --threads: {message}" in capsys.readouterr().err


def test_threads_flag_sets_torch_threads(tmp_path, torch_threads, capsys):
    torch.set_num_threads(1)
    assert main(["--threads", "2", "info", str(tmp_path / "missing.pt")]) == 2  # the file error comes after
    assert torch.get_num_threads() == 2
    assert "missing.pt" in capsys.readouterr().err


def test_version_is_the_installed_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kvideo {metadata.version('kvideo')}"


def test_version_falls_back_to_the_package_in_a_source_tree(monkeypatch):
    from kvideo import __version__
    from kvideo.cli import version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == __version__
