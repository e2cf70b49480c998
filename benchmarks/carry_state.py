"""What one GPU window hands the next: a run folder's state without its model files.

    python benchmarks/carry_state.py pack RUN OUT          # end of a window: OUT/state.tar.gz
    python benchmarks/carry_state.py restore PREVIOUS RUN  # start of the next: RUN from it

A lent GPU machine is bare at every window, and only the checkout travels to it (64 MiB with
the device kit's 48 MiB), so a run that a window's time limit stopped continues on the next
machine from what came back in the previous window's OUT. ``pack`` keeps what a continuing
run reads: ``run.json``, the split, each search's state file, records and exports, the
executed notebooks. It leaves out what is large and can be made again on the next machine
from what it keeps:

- ``checkpoints/`` and every ``*.keras`` file: a promoted trial whose checkpoint is absent
  trains from epoch 0 to its budget, which gives the same model as a warm start (the
  warm-start tests), at the cost of those epochs;
- ``baseline/`` and ``tuned/``: a model record is its ``model.keras`` and its metrics together,
  so both are dropped and the notebook trains that model again (seeded: the same model);
- ``docs/``: notebook 04 writes the report again; lock files: their processes are gone.

The archive must stay under ``--limit-mib`` (default 12: the kit's 48 MiB and this within the
64 MiB that travels); over it, ``pack`` exits 1 naming the largest entries. ``restore`` refuses
a RUN that already holds a run, so a state never overwrites one. The records hold the run
folder's and the dataset's absolute paths, so both windows must use the same ones
(``gpu_full_run.sh`` puts both under a fixed folder, not under the checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
from pathlib import Path

from seglib.artifacts import atomic_write

STATE_FILE = "state.tar.gz"
LEFT_OUT_FOLDERS = {"checkpoints"}  # anywhere in the run folder
LEFT_OUT_TOP = {"baseline", "tuned", "docs"}  # directly under it
LEFT_OUT_SUFFIXES = (".keras", ".lock")
MIB = 2**20


def carried(run: Path) -> list[Path]:
    """The run folder's files that the next window needs, relative to ``run``, sorted."""
    files = []
    for folder, dirs, names in os.walk(run):
        here = Path(folder).relative_to(run)
        dirs[:] = sorted(d for d in dirs if d not in LEFT_OUT_FOLDERS and not (here == Path(".") and d in LEFT_OUT_TOP))
        files += [here / name for name in sorted(names) if not name.endswith(LEFT_OUT_SUFFIXES)]
    return files


def pack(run: Path, out: Path, limit_mib: float) -> Path | None:
    """``out/state.tar.gz`` from ``run``; None (and nothing written) when ``run`` holds no run yet."""
    if not (run / "run.json").is_file():
        print(f"carry_state: {run} holds no run.json: nothing to carry (the next window starts from the beginning)")
        return None
    files = carried(run)

    def write(path: Path) -> None:
        with tarfile.open(path, "w:gz") as archive:
            for name in files:
                archive.add(run / name, arcname=str(name), recursive=False)
        size = path.stat().st_size
        if size > limit_mib * MIB:  # atomic_write removes the archive: nothing is left in OUT
            largest = sorted(files, key=lambda f: (run / f).stat().st_size, reverse=True)[:5]
            listed = ", ".join(f"{f} ({(run / f).stat().st_size / MIB:.1f} MiB)" for f in largest)
            sys.exit(
                f"carry_state: the state of {run} is {size / MIB:.1f} MiB compressed, over the "
                f"{limit_mib:g} MiB that can travel back; largest: {listed}"
            )

    target = atomic_write(out / STATE_FILE, write)
    print(f"carry_state: {target} ({target.stat().st_size / MIB:.2f} MiB, {len(files)} files of {run})")
    return target


def restore(previous: Path, run: Path) -> bool:
    """Unpack ``previous/state.tar.gz`` into ``run``; False when ``previous`` holds none."""
    state = previous / STATE_FILE
    if not state.is_file():
        found = sorted(p.name for p in previous.iterdir()) if previous.is_dir() else "no such folder"
        print(f"carry_state: no {STATE_FILE} in {previous} (found: {found}): the run starts from the beginning")
        return False
    if (run / "run.json").exists():
        sys.exit(
            f"carry_state: {run} already holds a run (run.json); expected an empty folder to restore "
            f"{state} into: move it away or continue it without a restore"
        )
    run.mkdir(parents=True, exist_ok=True)
    with tarfile.open(state, "r:gz") as archive:
        archive.extractall(run, filter="data")
    print(f"carry_state: restored {run} from {state}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="RUN's state into OUT/state.tar.gz")
    packing.add_argument("run", type=Path)
    packing.add_argument("out", type=Path)
    packing.add_argument("--limit-mib", type=float, default=12.0)
    restoring = commands.add_parser("restore", help="RUN from PREVIOUS/state.tar.gz")
    restoring.add_argument("previous", type=Path)
    restoring.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.run, args.out, args.limit_mib)
    else:
        restore(args.previous, args.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
