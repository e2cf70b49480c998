"""The docs work as written on a fresh clone after `make setup`, for a reader with none of the
machine's files that wrote them.

Every shell block of README.md and docs/*.md is split into simple commands and each is checked
as cheaply as it can be: a `seglib` line parses with seglib's own argparse (`--help` lines run
for real), a `make` line dry-runs its target, a script exists and a benchmark's options parse
with the script's own `parse_args`, every file a doc names exists, a search or run folder is
not reused by a later line of the same block, and no doc holds a path of the machine that ran
it or speaks of how the work was organised. The slow test runs the README's search block.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seglib.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECORDS = sorted((ROOT / "docs" / "run").rglob("*.json"))
GENERATED = ROOT / "docs" / "hyperparameter-optimization.md"  # written by seglib.report from a run
VENV_BIN = Path(sys.executable).parent  # .venv/bin of the environment the tests run in

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^([ \t]*)```(\w*)[^\n]*\n(.*?)^\1```", re.M | re.S)
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
OPERATORS = {";", "&&", "||", "|", "&"}
SHELL_WORDS = {"for", "done", "if", "fi", "while", "then", "else", "do"}
# Everyday tools a doc may use as they are; anything else must be seglib's or in .venv/bin.
SYSTEM_TOOLS = {"cd", "cp", "echo", "export", "git", "grep", "kill", "ls", "mkdir", "pip", "sed", "ssh", "tar", "xargs"}
REPO_PATH = re.compile(r"^(?:\./)?((?:seglib|benchmarks|docs|notebooks|tests|\.ci)/[\w./*-]*[\w*])")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"(?<![\w/.-])seglib(?:\.\w+)+")
MACHINE_PATH = re.compile(r"\.\./shared\b|(?<![\w.])/(?:work|root|home/\w+|Users/\w+)/")
WORK_ROUNDS = re.compile(
    r"\b(?:work )?sessions? \d|\b(?:device|GPU|work) sessions?\b|\bissues? #?\d|\bdevelopment machine\b"
    r"|\bcommit [0-9a-f]{7,40}\b|\b[0-9a-f]{7,40}'s\b",
    re.I,
)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
HARDWARE = re.compile(r"\b(?:CPU|GPU|H200|no hardware)\b")

# Docs another change is rewriting now; each entry is a known failure, checked to still fail
# (strict), so the marker goes when the doc is fixed.
KNOWN: dict[tuple[str, str], str] = {}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def each_doc(check: str) -> list:
    return [
        pytest.param(doc, id=rel(doc), marks=[pytest.mark.xfail(strict=True, reason=KNOWN[check, rel(doc)])])
        if (check, rel(doc)) in KNOWN
        else pytest.param(doc, id=rel(doc))
        for doc in DOCS
    ]


# ---------------------------------------------------------------------------------------------
# Reading the docs


def shell_blocks(doc: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each fenced shell block."""
    text = doc.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(2) in SHELL_LANGUAGES:
            indent = len(match.group(1))
            body = "\n".join(line[indent:] for line in match.group(3).splitlines())
            blocks.append((text.count("\n", 0, match.start()) + 2, body))
    return blocks


def simple_commands(block: str) -> list[list[str]]:
    """The block's simple commands as words: continuation lines joined, comments, variable
    assignments and shell keywords dropped, a command substitution's command taken out, and a
    ``for`` loop's body once per value of its variable."""
    commands, loops = [], {}
    for line in block.replace("\\\n", " ").splitlines():
        inner = SUBSTITUTION.findall(line)
        line = SUBSTITUTION.sub("SUBSTITUTED", line)
        for text in [*inner, line]:
            lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token not in OPERATORS:
                    words.append(token)
                    continue
                while words and (words[0] in SHELL_WORDS - {"for"} or re.match(r"^\w+=", words[0])):
                    words.pop(0)
                if words[:1] == ["for"] and words[2:3] == ["in"]:
                    loops[f"${words[1]}"] = words[3:]
                elif words and words[0] not in SHELL_WORDS:
                    variable = next((w for w in words if w in loops), None)
                    for value in loops.get(variable, [None]):
                        commands.append([w if w != variable else value for w in words if w != variable or value])
                words = []
    return commands


def doc_commands(doc: Path) -> list[tuple[str, list[str], int]]:
    """(where, words, block number) for every simple command of the doc's shell blocks."""
    return [
        (f"{rel(doc)}:{line}: {' '.join(words)}", words, number)
        for number, (line, block) in enumerate(shell_blocks(doc))
        for words in simple_commands(block)
    ]


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))


# ---------------------------------------------------------------------------------------------
# Checking one command


def exists(path: str) -> bool:
    """A repository path (globs allowed; a notebook may be named without its extension)."""
    if path.startswith(".venv/bin/"):
        return (VENV_BIN / path.removeprefix(".venv/bin/")).exists()
    return any(ROOT.glob(path)) or any(ROOT.glob(path + ".*"))


def check_seglib(words: list[str]) -> str | None:
    args = words[1:]
    if "--help" in args or "-h" in args:
        done = subprocess.run([VENV_BIN / "seglib", *args], capture_output=True, text=True, timeout=120)
        return None if done.returncode == 0 and "usage: seglib" in done.stdout else done.stderr[-500:]
    parser = build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as stop:
        return f"seglib's argparse refuses it (exit {stop.code})"
    return None


def check_python(words: list[str]) -> str | None:
    if words[0] != ".venv/bin/python":
        return f"{words[0]}: use .venv/bin/python (a bare python is not the project's environment)"
    args = words[1:]
    if args[:1] == ["-c"]:
        return None
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if importlib.util.find_spec(module) is None:
            return f"no module {module} in this environment"
        if module == "pytest":
            missing = [a for a in rest if a.startswith("tests/") and not exists(a.split("::")[0])]
            return f"no such test file: {missing}" if missing else None
        return None
    script, rest = args[0], args[1:]
    if not exists(script):
        return f"{script} does not exist"
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    # as `python script` runs it: its folder importable, itself a module (its dataclasses need that)
    sys.path.insert(0, str((ROOT / script).parent))
    before = sys.modules.get(spec.name)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str((ROOT / script).parent))
        if before is None:
            del sys.modules[spec.name]
        else:
            sys.modules[spec.name] = before
    if hasattr(module, "parse_args"):
        try:
            module.parse_args(rest)
        except SystemExit as stop:
            return f"{script} refuses these options (exit {stop.code})"
    return None


def check_make(words: list[str]) -> str | None:
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    unknown = [t for t in targets if t not in make_targets()]
    if unknown:
        return f"no make target {unknown} in the Makefile"
    # a dry run: the target's variables and recipe expand (a missing DATA= is refused here)
    done = subprocess.run(["make", "-n", "-C", ROOT, *words[1:]], capture_output=True, text=True, timeout=60)
    return None if done.returncode == 0 else done.stderr[-500:]


def check(words: list[str]) -> str | None:
    """Why the command would not work as written, or None."""
    program = words[0]
    missing = [m.group(1) for w in words if (m := REPO_PATH.match(w)) and not exists(m.group(1))]
    if missing:
        return f"no such file in the repository: {missing}"
    if program in ("seglib", ".venv/bin/seglib"):
        return check_seglib(words)
    if program in ("python", "python3", ".venv/bin/python"):
        return check_python(words)
    if program == "make":
        return check_make(words)
    if program in ("bash", "sh", "source", "."):
        return None if exists(words[1]) else f"{words[1]} does not exist"
    if program.startswith(".venv/bin/"):
        return None if exists(program) else f"{program} is not installed by make setup"
    if program in SYSTEM_TOOLS:
        return None
    return f"{program}: not seglib's, not in .venv/bin and not an everyday tool (add it to SYSTEM_TOOLS if it is one)"


def reused_folders(commands: list[tuple[str, list[str], int]]) -> list[str]:
    """Lines that would be refused when a block runs top to bottom: a new search, or a run with
    other settings, in a folder an earlier line of the same block used."""
    problems, used = [], {}
    for where, words, block in commands:
        if words[0] not in ("seglib", ".venv/bin/seglib") or len(words) < 2 or words[1] not in ("hpo", "run"):
            continue
        args = words[1:]
        if "--help" in args or "--out" not in args:
            continue
        out = args[args.index("--out") + 1]
        settings = tuple(a for a in args if a != "--resume")
        earlier = used.get((block, out))
        if earlier is not None:
            continues = {"--resume", "--stop", "--view"} & set(args) if args[0] == "hpo" else settings == earlier
            if not continues:
                problems.append(f"{where}: {out} already holds what an earlier line of this block made")
        used.setdefault((block, out), settings)
    return problems


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("doc", each_doc("commands"))
def test_every_command_in_the_docs_works_as_written(doc):
    commands = doc_commands(doc)
    problems = [f"{where}\n    -> {why}" for where, words, _ in commands if (why := check(words))]
    problems += reused_folders(commands)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", each_doc("files"))
def test_every_file_and_module_a_doc_names_exists(doc):
    text = doc.read_text()
    missing = []
    for span in CODE_SPAN.findall(text):
        for word in span.split():
            if (m := REPO_PATH.match(word.strip("()[],;:'\""))) and not exists(m.group(1)):
                missing.append(m.group(1))
    for link in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" not in link and not (doc.parent / link).exists():
            missing.append(link)
    for name in set(DOTTED.findall(text)):
        if not module_or_member_exists(name):
            missing.append(name)
    assert not missing, f"{rel(doc)} names what does not exist: {sorted(set(missing))}"


def module_or_member_exists(name: str) -> bool:
    """``seglib.a.b`` is a module, or ``seglib.a`` a module whose source defines or imports ``b``."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[cut:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", source.read_text()) is not None
    return False


@pytest.mark.parametrize("doc", each_doc("machine paths"))
def test_no_doc_holds_a_path_of_the_machine_that_wrote_it(doc):
    found = [
        f"{rel(doc)}:{n}: {line.strip()}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert not found, "paths a reader's machine does not have:\n" + "\n".join(found)


def test_no_committed_run_record_holds_a_machine_path():
    found = [
        f"{rel(record)}: {match.group(0)}" for record in RECORDS for match in MACHINE_PATH.finditer(record.read_text())
    ]
    assert RECORDS and not found, found


@pytest.mark.parametrize("doc", each_doc("work rounds"))
def test_docs_speak_of_the_software_not_of_how_the_work_was_organised(doc):
    found = [
        f"{rel(doc)}:{n}: {match.group(0)!r}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        for match in WORK_ROUNDS.finditer(line)
    ]
    assert not found, "\n".join(found)


def test_every_figure_section_of_the_benchmarks_names_its_date_and_hardware():
    sections = re.split(r"^## ", (ROOT / "docs" / "benchmarks.md").read_text(), flags=re.M)[1:]
    assert sections
    for section in sections:
        title = section.splitlines()[0]
        assert DATE.search(section), f"docs/benchmarks.md, {title!r}: no date (YYYY-MM-DD)"
        if "not measured" not in title:
            assert HARDWARE.search(section), f"docs/benchmarks.md, {title!r}: no hardware named"


def test_the_readme_names_both_test_commands_with_measured_times():
    text = (ROOT / "README.md").read_text()
    for target in ("test", "test-all"):
        row = next((line for line in text.splitlines() if line.startswith(f"| `make {target}` |")), "")
        assert DATE.search(row) and re.search(r"\d+ min", row), f"README: `make {target}` needs a measured, dated time"
    assert "make test-all" in (ROOT / ".ci" / "run").read_text(), "CI runs both tiers"


def test_the_seglib_command_is_installed_where_the_readme_says():
    done = subprocess.run([VENV_BIN / "seglib", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: seglib" in done.stdout, done.stderr
    assert (VENV_BIN / "activate").is_file(), "README: source .venv/bin/activate"


def test_the_checks_catch_what_a_newcomer_met():
    """Each check fails on the mistake it is for."""
    assert check(["seglib", "run", "--out", "r", "--mixed-precision", "bf16"])
    assert check(["python", "benchmarks/bench_hpo.py"])
    assert check([".venv/bin/python", "benchmarks/bench_hpo.py", "--mixed-precision", "bf16"])
    assert check(["make", "device-kit"]), "make device-kit without DATA= is refused"
    assert check(["make", "no-such-target"])
    assert check(["bash", "benchmarks/missing.sh"])
    assert check(["seglib", "predict", "model.keras", "a.jpg", "--out", "p", "[--tta]"])
    assert not check(["seglib", "hpo", "--out", "runs/hpo", "--engine", "local"])
    block = "seglib hpo --out runs/hpo\nseglib hpo --out runs/hpo --engine local\nseglib hpo --out runs/hpo --resume"
    commands = [("x", words, 0) for words in simple_commands(block)]
    assert len(reused_folders(commands)) == 1
    assert MACHINE_PATH.search("--data '../shared/data/x'") and MACHINE_PATH.search('"data": "/work/shared/x"')
    assert not MACHINE_PATH.search("seglib hpo --out /shared/runs/hpo --python-path /opt/venv/bin")
    assert WORK_ROUNDS.search("measured in session 3") and WORK_ROUNDS.search("issue 9's goals")
    assert not WORK_ROUNDS.search("SSH sessions there have it")


@pytest.mark.slow
@pytest.mark.nni
def test_the_readmes_search_block_runs_top_to_bottom(tmp_path):
    """The README's `seglib hpo` block, as written, in a fresh folder (NNI, then in-process, then --resume)."""
    block = next(text for _, text in shell_blocks(ROOT / "README.md") if "seglib hpo" in text)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "SEGLIB_CACHE": str(tmp_path / "c")}
    for words in simple_commands(block):
        done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stderr[-3000:]}"
    for folder in ("runs/hpo", "runs/hpo-local"):
        summary = json.loads((tmp_path / folder / "trials.json").read_text())["summary"]
        assert summary["finished"], folder
    assert shutil.which("seglib", path=str(VENV_BIN))
