"""The command line: one line for bad input, a traceback for bugs, checks before data, help
for every flag, the version, and the packaged recipes."""

import argparse
from dataclasses import fields

import pytest

import vggnet
from vggnet.cli import build_parser, main
from vggnet.training.config import TrainConfig, find_recipe, list_recipes, resolve


def test_unknown_model_is_reported_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VGGNET_DATA", raising=False)
    monkeypatch.setenv("VGGNET_CACHE", str(tmp_path / "cache"))
    code = main(["train", "--model", "vgg17", "--data", "cifar10", "--data-root",
                 str(tmp_path / "nothing-here"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'vgg17'" in err and "vgg16" in err
    assert "cifar10 not found" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--width", "-1"], "width must be a number in (0, 64]"),
    (["--data", "no/such/folder"], "data set 'no/such/folder' not found"),
    (["--weights", "no/such/file.pth"], "weights: no/such/file.pth not found"),
    (["--schedule", "plateu"], "schedule must be one of"),
])
def test_the_whole_config_is_checked_first(tmp_path, capsys, flags, message):
    code = main(["train", "--data", "digits", "--out", str(tmp_path / "run"), *flags])
    assert code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from helpers import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("cli") / "run")


# counts and sizes that mean nothing: refused in one line naming the flag, before any work
NONSENSE = [
    (["evaluate", "{run}", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["evaluate", "{run}", "--limit", "-5"], "--limit must be at least 1, not -5"),
    (["evaluate", "{run}", "--protocol", "multicrop", "--grid", "0"], "--grid must be at least 1"),
    (["evaluate", "{run}", "--image-size", "0"], "--image-size must be at least 1, not 0"),
    (["evaluate", "{run}", "--protocol", "dense", "--scales", "0"], "--scales takes test scales"),
    (["export", "{run}", "--input-size", "0"], "--input-size must be at least 1 pixel, not 0"),
    (["export", "{run}", "--int8", "--calibration", "0"], "--calibration must be at least 1"),
    (["export", "{run}", "--int8", "--check-images", "-1"], "--check-images must be at least 1"),
    (["predict", "{run}", "{image}", "--top-k", "0"], "--top-k must be at least 1, not 0"),
    (["samples", "digits", "--out", "{tmp}/samples", "--count", "0"], "--count must be at least 1"),
    (["summary", "vgg11", "--input-size", "0"], "vgg11 needs images of at least 32x32 pixels"),
    (["summary", "vgg11", "--input-size", "64", "64", "64"], "one number (a square input) or two"),
    (["stylize", "{image}", "{image}", "--weights", "{run}", "--out", "{tmp}/s.png", "--size", "0"],
     "--size takes the result's longer side in pixels, 1 or more; got 0"),
    (["stylize", "{image}", "{image}", "--weights", "{run}", "--out", "{tmp}/s.png",
      "--style-scale", "-1"], "--style-scale is the style images' size relative to the result"),
    (["stylize", "{image}", "{image}", "--weights", "{run}", "--out", "{tmp}/s.png",
      "--style-weight", "nan"], "style_weight must be a finite number >= 0, not nan"),
    (["stylize", "{image}", "{image}", "--weights", "{run}", "--out", "{tmp}/s.png",
      "--optimizer", "adam", "--lr", "0"], "lr (Adam's step) must be a finite number > 0"),
]


@pytest.mark.parametrize("argv, message", NONSENSE, ids=[" ".join(a[:1] + a[2:])[:60]
                                                         for a, _ in NONSENSE])
def test_counts_and_sizes_that_mean_nothing_are_one_line_errors(tiny_run, tmp_path, capsys,
                                                                 argv, message):
    from helpers import write_image

    image = write_image(tmp_path / "a.png", size=(40, 40))
    names = {"run": str(tiny_run), "image": str(image), "tmp": str(tmp_path)}
    before = sorted(p.name for p in tiny_run.iterdir())
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tiny_run.iterdir()) == before  # nothing was written
    assert not (tmp_path / "samples").exists() and not (tmp_path / "s.png").exists()


def test_an_internal_bug_keeps_its_traceback(monkeypatch):
    """A ValueError from a bug is not dressed up as a user error."""
    import vggnet.cli.models as cmd

    def broken(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cmd, "run", broken)  # registered when main() builds its parser
    with pytest.raises(ValueError, match="an internal bug"):
        main(["models"])


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    with pytest.raises(vggnet.WeightsError, match="checkpoint not found"):
        main(["-v", "evaluate", str(tmp_path / "nothing")])


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"vggnet {vggnet.__version__}"


def test_help_version_and_usage_errors_answer_without_loading_pytorch():
    """`vggnet --help` and friends do not wait seconds for PyTorch to load: checked by what a
    fresh interpreter has imported once each has answered, not by timing it."""
    import subprocess
    import sys

    code = """
import sys
from vggnet.cli import main
for argv in (["--help"], ["--version"], ["trian"], ["serve", "--help"], ["predict", "--help"],
             ["export", "--help"]):
    try:
        main(argv)
    except SystemExit as done:
        print(argv[0], done.code, "torch" in sys.modules, file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.split(" ")[-1] in ("True", "False")]
    assert lines == ["--help 0 False", "--version 0 False", "trian 2 False", "serve 0 False",
                     "predict 0 False", "export 0 False"], done.stderr
    assert "train a VGG" in done.stdout and "--backend" in done.stdout
    # the one sub-command whose options need the library is built in full when it runs
    parser = build_parser(only="train")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--epochs" in sub.choices["train"].format_help()


def test_every_train_flag_has_its_fields_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices["train"]._actions}
    for f in fields(TrainConfig):
        help_text = actions[f.name].help
        assert f.metadata["help"] and help_text.startswith(f.metadata["help"].replace("%", "%%")), f.name
        # a default is shown once, never as "(default None)" after a text that explains it
        assert "(default None)" not in help_text, f.name
        assert f.default is None or f"(default {f.default})" in help_text, f.name


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_command_help_ends_with_examples_that_parse():
    """Each sub-command's --help ends with two or three examples, and each `vggnet` example
    is a command line its own parser accepts (so an example cannot name a flag that is not
    there)."""
    from vggnet.cli import COMMANDS

    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        text = sub.format_help()
        assert "\nexamples:\n" in text, name
        examples = [ln.strip() for ln in text.split("\nexamples:\n", 1)[1].splitlines()
                    if ln.strip()]
        assert 1 <= len(examples) <= 3, name
        for line in examples:
            words = line.split()
            if words[0] == "curl":
                continue
            assert words[:2] == ["vggnet", name], line
            if ">" in words:  # a shell redirection ends the command
                words = words[:words.index(">")]
            parser.parse_args(words[1:])
    assert {c.NAME for c in COMMANDS} == set(_subparsers(parser))


def test_the_backend_help_lists_auto_in_the_order_the_code_tries():
    from vggnet.inference.names import AUTO_ORDER, BACKENDS

    parser = build_parser()
    for name in ("predict", "serve"):
        action = next(a for a in _subparsers(parser)[name]._actions if a.dest == "backend")
        auto = action.help.split("auto (default):", 1)[1].split(";", 1)[0]
        assert [auto.index(b + " (") for b in AUTO_ORDER] == sorted(
            auto.index(b + " (") for b in AUTO_ORDER), auto
        for backend in BACKENDS[1:]:
            assert backend in action.help


def test_packaged_recipes_are_found_by_name_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    names = list_recipes()
    assert {"cifar10_quick", "demo_digits", "imagenet/vgg16_S256"} <= set(names)
    for spelling in ("cifar10_quick", "cifar10_quick.toml", "configs/cifar10_quick.toml"):
        assert find_recipe(spelling) == names["cifar10_quick"]
    assert resolve("cifar10_quick").model == "vgg11_bn"
    assert main(["recipes"]) == 0
    assert "imagenet/vgg16_S256" in capsys.readouterr().out
    assert main(["train", "--config", "cifar10_quik"]) == 2
    assert "Did you mean 'cifar10_quick'?" in capsys.readouterr().err


def test_every_flag_of_every_command_is_explained():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"vggnet {name}: {action.option_strings or action.dest}"
