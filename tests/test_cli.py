"""Every ordinary mistake at the command line: one line naming it, one exit code, no traceback, at once.

Each case runs ``python -m seglib.cli`` as a user would. Exit codes: 2 for a command line
argparse refuses (with its usage line first), 1 for everything else, the same in every
sub-command.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

SETTINGS_SECONDS = 2.0  # a bad setting is refused before anything else starts


def seglib(*args, cwd=None) -> tuple[int, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "seglib.cli", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    return done.returncode, done.stderr, time.perf_counter() - started


MISTAKES = [
    # (arguments, exit code, the first line of the message starts with, must fail within 2 s)
    (
        ["run", "--out", "{tmp}/r", "-p", "batch_size=abc"],
        1,
        "seglib run: batch_size='abc': expected an integer >= 1",
        True,
    ),
    (
        ["run", "--out", "{tmp}/r", "-p", "batch_size=-3"],
        1,
        "seglib run: batch_size=-3: expected an integer >= 1",
        True,
    ),
    (["run", "--out", "{tmp}/r", "-p", "epochs=0"], 1, "seglib run: epochs=0: expected an integer >= 1", True),
    (["run", "--out", "{tmp}/r", "-p", "precision=bf17"], 1, "seglib run: precision='bf17': expected one of", True),
    (
        ["run", "--out", "{tmp}/r", "-p", "epoks=2"],
        1,
        "seglib run: unknown setting 'epoks' (did you mean 'epochs'?)",
        True,
    ),
    (["run", "--out", "{tmp}/r", "-p", "depth=7"], 1, "seglib run: patch_size=64 with depth=7", True),
    (["run", "--out", "{tmp}/r", "-p", "epochs"], 1, "seglib run: -p expects KEY=VALUE", True),
    (
        ["run", "--out", "{tmp}/r", "--data", "{tmp}/nowhere"],
        1,
        "seglib run: dataset folder {tmp}/nowhere does not exist",
        True,
    ),
    (["run", "--out", "{tmp}/a-file"], 1, "seglib run: --out {tmp}/a-file is a file", True),
    (
        ["run", "--out", "{tmp}/r", "--profile", "nope"],
        2,
        "seglib run: argument --profile: invalid choice: 'nope'",
        True,
    ),
    (
        ["hpo", "--out", "{tmp}/h", "--profile", "nope"],
        2,
        "seglib hpo: argument --profile: invalid choice: 'nope'",
        True,
    ),
    (
        ["hpo", "--out", "{tmp}/h", "--data", "{tmp}/nowhere"],
        1,
        "seglib hpo: dataset folder {tmp}/nowhere does not exist",
        True,
    ),
    (["hpo", "--out", "{tmp}/h", "-p", "max_budget=0"], 1, "seglib hpo: max_budget=0: expected an integer >= 1", True),
    (["hpo", "--out", "{tmp}/h", "--resume"], 1, "seglib hpo: {tmp}/h/experiment.json not found", True),
    (["hpo", "--out", "/proc/no-such/folder", "-p", "max_budget=1"], 1, "seglib hpo: ", False),
    (["hpo"], 2, "seglib hpo: the following arguments are required: --out", True),
    (["prepare", "{tmp}/nowhere"], 1, "seglib prepare: dataset folder {tmp}/nowhere does not exist", True),
    (["predict"], 2, "seglib predict: the following arguments are required", True),
    (
        ["predict", "m.keras", "a.png", "--out", "{tmp}/p", "--batch-size", "0"],
        2,
        "seglib predict: argument --batch-size: expected a whole number >= 1, found '0'",
        True,
    ),
    (["frobnicate"], 2, "seglib: argument COMMAND: invalid choice: 'frobnicate'", True),
    # An unknown option is refused by the sub-command it was given to, which points to its own --help.
    *(
        (
            [command, *required, "--bogus"],
            2,
            f"seglib {command}: unrecognized arguments: --bogus; see `seglib {command} --help`",
            True,
        )
        for command, required in [
            ("predict", ["m.keras", "a.png", "--out", "{tmp}/p"]),
            ("hpo", ["--out", "{tmp}/h"]),
            ("run", ["--out", "{tmp}/r"]),
            ("prepare", []),
        ]
    ),
]


@pytest.mark.parametrize(
    "args, code, first_line, fast", MISTAKES, ids=[" ".join(m[0][:2] + m[0][3:5]) for m in MISTAKES]
)
def test_a_mistake_gets_one_line_and_its_exit_code(tmp_path, args, code, first_line, fast):
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in args]
    returncode, err, seconds = seglib(*args, cwd=tmp_path)
    assert returncode == code, err
    assert err.splitlines()[0].startswith(first_line.format(tmp=tmp_path)), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2, err
    if fast:
        assert seconds < SETTINGS_SECONDS, f"{args}: {seconds:.1f} s"
    assert not (tmp_path / "r" / "01_data.ipynb").exists(), "nothing ran"


def test_debug_shows_the_traceback(tmp_path):
    returncode, err, _ = seglib("--debug", "run", "--out", tmp_path / "r", "-p", "epochs=0")
    assert returncode == 1 and "Traceback" in err and "SettingError" in err


def test_help_lists_the_profiles_and_says_what_seglib_is():
    done = subprocess.run([sys.executable, "-m", "seglib.cli", "--help"], capture_output=True, text=True)
    assert "U-Net segmentation of aerial imagery" in done.stdout and "Every mistake" not in done.stdout
    done = subprocess.run([sys.executable, "-m", "seglib.cli", "hpo", "--help"], capture_output=True, text=True)
    assert "{best,best-cpu,full,quick}" in done.stdout


def test_parsing_predicts_command_line_imports_no_numpy_or_keras():
    """``seglib predict --help`` and its usage mistakes are answered before Keras (6-15 s) is imported."""
    script = (
        "import sys\n"
        "from seglib.cli import main\n"
        "for argv in (['predict', '--help'], ['predict', 'm.keras', 'a.png', '--out', 'o', '--bogus']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('numpy', 'PIL', 'keras', 'tensorflow', 'jax') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seglib predict: unrecognized arguments: --bogus" in done.stderr
    assert done.stdout.splitlines()[-1] == "[]", done.stdout[-3000:]
