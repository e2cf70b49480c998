"""The ``seglib`` command: prepare data, run a search, run the notebooks, segment images.

Every mistake a user can make ends in one line naming what is wrong and what to do, with
one exit code per kind: 2 for a command line argparse refuses, 1 for everything else, 130
after Ctrl-C (or SIGTERM/SIGHUP, which stop a command the same way). ``--debug`` (or
``SEGLIB_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import errno
import os
import shlex
import signal
import sys
from pathlib import Path

from seglib.noise import quiet_stderr
from seglib.settings import ENGINES, PRECISIONS, PROFILES, SPLITS, SettingError, profile

DESCRIPTION = "U-Net segmentation of aerial imagery, tuned with HyperBand; notebooks 01-04 headless."
INTERRUPTED_EXIT = 130


def parse_parameters(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings to a dict; values are Python literals when they parse as one."""
    result = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"-p expects KEY=VALUE, got {pair!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        result[key.strip()] = value
    return result


def _check_data(data) -> None:
    """A dataset folder that is missing or holds no pairs fails now, not in a notebook or trial."""
    if data is not None:
        from seglib.data import find_pairs

        find_pairs(data)


# ---------------------------------------------------------------------------------------------
# seglib prepare


def _prepare_options(parser) -> None:
    parser.add_argument("data", nargs="?", default=None, help="dataset folder (default: the embedded dataset)")
    parser.add_argument(
        "--profile",
        default="quick",
        choices=sorted(PROFILES),
        help="profile whose patch size and split to use (default quick)",
    )
    parser.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default: the profile's)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default $SEGLIB_CACHE or ~/.cache/seglib)")
    parser.add_argument("--no-cache", action="store_true", help="prepare without reading or writing the cache")
    parser.add_argument(
        "--prune-cache", action="store_true", help="after preparing, delete every other cached patch set"
    )
    parser.add_argument("--skip-mismatched", action="store_true", help="skip pairs whose image and mask sizes differ")
    parser.add_argument("--split", choices=SPLITS, default=None, help="also print this split's sizes and class shares")


def _prepare(args) -> int:
    from seglib.data import CLASS_NAMES, cache_root, make_split, natural_key, prepare, prune_cache, split_class_shares

    settings = profile(args.profile, **({"split": args.split} if args.split else {}))
    patches = prepare(
        args.data,
        patch_size=args.patch_size or settings.patch_size,
        skip_mismatched=args.skip_mismatched,
        cache_dir=args.cache_dir,
        cache=not args.no_cache,
    )
    print(patches.summary())
    if args.prune_cache:
        removed, freed = prune_cache(patches.cache_path, args.cache_dir)
        print(
            f"pruned {removed} other cache entries ({freed / 2**20:,.1f} MB) "
            f"from {cache_root(args.cache_dir) / 'patches'}"
        )
    if args.split:
        index = make_split(patches, settings)
        for name, shares in split_class_shares(patches, index).items():
            tiles = sorted(set(patches.tile_of_patch[index[name]]), key=natural_key)
            print(
                f"{settings.split} split {name}: {len(index[name])} patches"
                + (f" (tiles {', '.join(tiles)})" if settings.split == "tiles" else "")
                + ": "
                + ", ".join(f"{c} {s:.1%}" for c, s in zip(CLASS_NAMES, shares))
            )
    return 0


# ---------------------------------------------------------------------------------------------
# seglib hpo


def _hpo_options(parser) -> None:
    from seglib.settings import MAIN_TUNERS, TUNERS

    parser.add_argument(
        "--out", required=True, type=Path, help="search folder (trials.csv, trials.json, best.json, state)"
    )
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="settings profile (default quick)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the embedded dataset)")
    parser.add_argument(
        "--tuner",
        choices=TUNERS,
        default=None,
        help=f"the search: {', '.join(MAIN_TUNERS)} (sets the tuner setting; default: the profile's, "
        "hyperband), or random search at equal epochs",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="nni (processes, web UI) or local (in-process); default: the profile's",
    )
    parser.add_argument(
        "--max-budget", "-R", type=int, default=None, help="HyperBand R in epochs (default: the profile's)"
    )
    parser.add_argument("--eta", type=int, default=None, help="HyperBand η (default: the profile's)")
    parser.add_argument("--max-trials", type=int, default=None, help="cap on trials (default: one full HyperBand pass)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="trials at once, nni engine (default: the profile's)"
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="fp32 (default), bf16 (Ampere+ GPUs) or fp16 (T4)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the configurations drawn and of training")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="any other setting (repeatable)"
    )
    parser.add_argument(
        "--space",
        type=Path,
        default=None,
        help="JSON file of search-space entries (NNI's format) merged over the original's",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="asha, random search: epochs in all (default: a HyperBand pass's)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="nni: web UI port on localhost (default: first free from 8080)"
    )
    parser.add_argument(
        "--backend", default=None, help="nni: the trials' Keras backend (jax, tensorflow; default: this environment's)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (resumable)")
    parser.add_argument(
        "--remote",
        action="append",
        default=[],
        metavar="USER@HOST[:PORT]",
        help="nni: run trials on this machine over SSH (repeatable); --out must then be shared storage "
        "at the same absolute path on every machine (docs/hpo.md)",
    )
    parser.add_argument(
        "--python-path",
        default=None,
        metavar="DIR",
        help="--remote: bin folder of the Python with seglib and nni on every machine, e.g. /opt/venv/bin",
    )
    parser.add_argument(
        "--ssh-key", default=None, metavar="FILE", help="--remote: SSH private key (default ~/.ssh/id_rsa)"
    )
    parser.add_argument(
        "--manager-ip",
        default=None,
        metavar="IP",
        help="--remote: this machine's address as the trial machines reach it (default: NNI's guess)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--resume", action="store_true", help="continue the search in --out")
    action.add_argument(
        "--view", action="store_true", help="nni: open the finished search's web UI read-only (Ctrl-C ends)"
    )
    action.add_argument("--stop", action="store_true", help="stop the search running in --out (it stays resumable)")


def _hpo(args) -> int:
    from seglib import hpo
    from seglib.artifacts import read_json
    from seglib.report.numbers import statuses_text
    from seglib.settings import MAIN_TUNERS

    if args.stop:
        stopped = hpo.stop(args.out)
        print(
            f"stopped the search in {args.out} (process {stopped['pid']}); continue it with --resume"
            if stopped
            else f"no search is running in {args.out}"
        )
        return 0
    if args.view:
        return _view(args.out, args.port)
    flags = {
        "data": args.data,
        "engine": args.engine,
        "max_budget": args.max_budget,
        "eta": args.eta,
        "max_trials": args.max_trials,
        "concurrency": args.concurrency,
        "precision": args.precision,
        "seed": args.seed,
        "tuner": args.tuner if args.tuner in MAIN_TUNERS else None,  # random search is never the main one
    }
    overrides = {**{k: v for k, v in flags.items() if v is not None}, **parse_parameters(args.param)}
    settings = profile(args.profile, **overrides)
    _check_data(settings.data)
    space = hpo.search_space(read_json(args.space)) if args.space else None
    experiment = _search(args)(
        args.out,
        settings,
        args.tuner,
        resume=bool(args.resume),
        space=space,
        max_epochs=args.max_epochs,
        backend=args.backend,
        timeout=args.timeout,
        show=lambda p: print(hpo.format_progress(p), flush=True),
        **({"port": args.port} if args.port else {}),
    )
    summary, best = experiment.summary, experiment.best
    print(
        f"{summary.trials} trials ({statuses_text(summary.statuses)}), {summary.epochs_trained} epochs trained "
        f"(planned {summary.epochs_planned}), engine {summary.engine}"
    )
    print(f"best: val loss {best.value} with {best.params} ({best.config_id} at {best.budget} epochs)")
    print("wrote " + ", ".join(str(experiment.folder / name) for name in ("trials.csv", "trials.json", "best.json")))
    return 0


def _search(args):
    """``hpo.tune``, or with --remote the same on those machines (checked over SSH first)."""
    from seglib.hpo import remote

    return remote.searcher(args.remote, python_path=args.python_path, ssh_key=args.ssh_key, manager_ip=args.manager_ip)


def _view(out: Path, port: int | None) -> int:
    import time

    from seglib.hpo.engines import nni

    experiment = nni.view(out, port=port)
    nni.show_web_ui(experiment.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        experiment.stop()


# ---------------------------------------------------------------------------------------------
# seglib run


def _run_options(parser) -> None:
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="run settings (default quick)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: artefacts and executed notebooks")
    parser.add_argument("--data", default=None, help="dataset folder, or 'kaggle' to download (default: embedded)")
    parser.add_argument(
        "--notebooks", type=Path, default=None, help="folder of the four notebooks (default: the checkout's)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="where the report goes (default OUT/docs; 'docs' rewrites the committed one)",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. -p epochs=2 -p engine=local (repeatable; seglib/settings.py lists them)",
    )
    parser.add_argument(
        "--log-output",
        action="store_true",
        help="also pass the notebooks' own output through (prints, training epochs); their steps and "
        "the search's progress are printed either way",
    )


def _run(args, argv: list[str]) -> int:
    from seglib.run import run_pipeline

    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out {args.out} is a file; expected a run folder (new or one to continue)")
    overrides = parse_parameters(args.param)
    profile(args.profile, **overrides)  # every setting checked before a kernel starts
    if args.data != "kaggle":
        _check_data(args.data)
    run_pipeline(
        args.out,
        args.profile,
        args.data,
        overrides,
        args.notebooks,
        args.docs,
        args.log_output,
        command="seglib " + shlex.join(argv),
    )
    print(f"[seglib run] report: {Path(args.docs or args.out / 'docs') / 'hyperparameter-optimization.md'}")
    return 0


# ---------------------------------------------------------------------------------------------
# seglib predict


def _predict_options(parser) -> None:
    from seglib.predict.cli import configure_cli

    configure_cli(parser)


def _predict(args) -> int:
    from seglib.predict.cli import cli

    return int(cli(args) or 0)


# ---------------------------------------------------------------------------------------------
# The command

COMMANDS = {
    "prepare": ("prepare the dataset's patches and print their summary", _prepare_options),
    "hpo": ("run a HyperBand (or random) search and export its trials", _hpo_options),
    "run": ("execute notebooks 01->04 with papermill and rebuild the report", _run_options),
    "predict": ("segment whole images with a trained model", _predict_options),
}
# What is true after Ctrl-C, per command: the others keep their state and continue where they stopped.
INTERRUPTED_HINTS = {
    "predict": "the images reported above are complete and no partial file was left; "
    "run it again with the images not reported",
}
CONTINUE_HINT = "run the same command again to continue"


class Parser(argparse.ArgumentParser):
    """argparse, with a refused command line said in one line (exit 2) instead of a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


class CommandParser(Parser):
    """A sub-command's parser: it refuses the arguments it does not know itself.

    argparse leaves them to the top-level parser, whose message would point to ``seglib
    --help``; this one names the sub-command and its own ``--help``.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    """The parser; every sub-command's options import only what parsing needs (no Keras)."""
    parser = Parser(prog="seglib", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also SEGLIB_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for name, (help_text, options) in COMMANDS.items():
        options(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SEGLIB_DEBUG") == "1"
    command_argv = [a for a in argv if a != "--debug"]
    _stop_on_signals(interrupt_kernels=args.command == "run")
    try:
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "hpo":
            return _hpo(args)
        if args.command == "run":
            return _run(args, command_argv)
        return _predict(args)
    except KeyboardInterrupt:
        print(f"seglib {args.command}: interrupted; {_continue_with(args, command_argv)}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as error:
        if debug:
            raise
        print(f"seglib {args.command}: {_message(error)}", file=sys.stderr)
        return 1


def _continue_with(args, argv: list[str]) -> str:
    """What to run after an interruption: a search continues only with --resume (without it the
    same command is refused, the folder holding a search); a run continues as it was started."""
    if args.command == "hpo" and not (args.resume or args.stop or args.view):
        return f"continue the search with: {shlex.join(['seglib', *argv, '--resume'])}"
    if args.command in ("hpo", "run"):
        return f"{CONTINUE_HINT}: {shlex.join(['seglib', *argv])}"
    return INTERRUPTED_HINTS.get(args.command, CONTINUE_HINT)


def _message(error: Exception) -> str:
    """One line (or a few, for a tuner's own traceback) for an error a user can act on."""
    if isinstance(error, OSError) and error.errno in errno.errorcode and errno.errorcode[error.errno] not in str(error):
        return f"{error} ({errno.errorcode[error.errno]})"
    if isinstance(error, (OSError, ValueError, RuntimeError, LookupError)):
        return str(error) or type(error).__name__
    return f"unexpected {type(error).__name__}: {error} (run with --debug for the traceback)"


def _stop_on_signals(interrupt_kernels: bool = False) -> None:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does: its children stopped, its state kept.

    ``seglib run`` first passes the Ctrl-C to its notebook kernels, as a terminal would.
    """

    def interrupt(signum, frame):
        if interrupt_kernels:
            from seglib.run import interrupt_kernels as to_kernels

            to_kernels()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP) + ((signal.SIGINT,) if interrupt_kernels else ()):
        signal.signal(signum, interrupt)


def command() -> int:
    """The ``seglib`` program: :func:`main` in a process of its own, third-party noise filtered."""
    quiet_stderr()
    return main()


if __name__ == "__main__":
    raise SystemExit(command())
