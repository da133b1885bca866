"""The shared flags: one spelling each, old spellings still parse to the same values, bad values get one line."""
import argparse
from importlib.metadata import entry_points

import pytest

from latentforge.cli import build_parser, main
from latentforge.runtime import BACKENDS
from latentforge.runtime.backends import PRECISIONS

OLD_AND_NEW = [
    (["export", "m.safetensors", "-o", "m.onnx", "--dtype", "fp16"],
     ["export", "m.safetensors", "-o", "m.onnx", "--precision", "fp16"]),
    (["edit", "m.safetensors", "--input", "a.png", "-o", "b.png", "--attr", "eyes_open=+1.5", "--attr", "smile=-1"],
     ["edit", "m.safetensors", "--input", "a.png", "-o", "b.png", "--edit", "eyes_open=+1.5", "--edit", "smile=-1"]),
    (["edit", "m.safetensors", "--input", "a.png", "-o", "b.png", "--attr", "eyes_open=1", "--edit", "smile=-1"],
     ["edit", "m.safetensors", "--input", "a.png", "-o", "b.png", "--edit", "eyes_open=1", "--edit", "smile=-1"]),
]


def parse(argv):
    return vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("old,new", OLD_AND_NEW)
def test_old_spellings_parse_to_the_same_values(old, new):
    assert parse(old) == parse(new)


def test_parsed_values():
    assert parse(OLD_AND_NEW[0][0])["precision"] == "fp16"
    assert parse(OLD_AND_NEW[1][0])["edit"] == [("eyes_open", 1.5), ("smile", -1.0)]
    assert parse(["export", "m.safetensors", "-o", "m.onnx"])["precision"] == "fp32"
    assert parse(["filter", "m.onnx", "--input", "x", "--output", "y", "--edit", "smile=2"])["edit"] == [("smile", 2.0)]


def test_one_batch_parser_and_what_each_command_makes_of_it():
    assert parse(["bench", "m.onnx", "--batch", "1,4"])["batch"] == (1, 4)
    assert parse(["bench", "m.onnx"])["batch"] == (1, 16, 128)
    assert parse(["export", "m.safetensors", "-o", "m.plan", "--batch", "1,8,32"])["batch"] == (1, 8, 32)
    assert parse(["export", "m.safetensors", "-o", "m.plan", "--batch", "8"])["batch"] == (8, 8, 8)


def test_choices_come_from_the_runtime():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if "--precision" in action.option_strings or "--dtype" in action.option_strings:
                assert action.choices is PRECISIONS, name
                seen += 1
            if "--backend" in action.option_strings:
                assert action.choices is BACKENDS, name
                seen += 1
    assert seen == 11  # filter, serve, export (--dtype) precision; sample, interpolate, filter, edit, serve, compress,
    # decompress backend


@pytest.mark.parametrize("argv,needle", [
    (["sample", "m.onnx", "-o", "s.png", "--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
    (["filter", "m.onnx", "--input", "x", "--output", "y", "--precision", "fp8"],
     "argument --precision: invalid choice: 'fp8'"),
    (["export", "m.safetensors", "-o", "m.onnx", "--dtype", "fp64"], "argument --dtype: invalid choice: 'fp64'"),
    (["edit", "m.safetensors", "--input", "a.png", "-o", "b.png", "--attr", "smile"], "argument --attr: an edit is"),
    (["edit", "m.safetensors", "--input", "a.png", "-o", "b.png"], "at least one --edit"),
    (["bench", "m.onnx", "--batch", "1,0"], "batch sizes must be positive"),
    (["bench", "m.onnx", "--threads", "0"], "must be a positive integer"),
    (["export", "m.safetensors", "-o", "m.plan", "--batch", "1,8"], "MIN,OPT,MAX"),
    (["train", "vae"], "required: --out"),
])
def test_bad_flags_get_one_line_and_status_2(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("latentforge: error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_help_names_each_flag_once_and_mentions_the_old_spelling(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "[--precision {" in text and "[--dtype" not in text and "also spelled --dtype" in text


def test_the_console_script_points_at_main():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "latentforge"]
    assert script.value == "latentforge.cli:main" and script.load() is main
