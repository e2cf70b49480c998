"""What one GPU window hands the next: a run folder's state without its model files.

    python benchmarks/carry_state.py pack RUN OUT [--cache DIR]          # end of a window: OUT/state.tar.gz
    python benchmarks/carry_state.py restore PREVIOUS RUN [--cache DIR]  # start of the next: RUN from it

A lent GPU machine is bare at every window, and only the checkout travels to it (64 MiB with
the device kit), so a run that a window's time limit stopped continues on the next
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

With ``--cache`` (JAX's persistent compilation cache, ``$SEGLIB_COMPILE_CACHE``), ``pack`` also
writes ``compile-cache.tar.gz``: the compiled programs, largest first, as many as fit in what
the state leaves of the limit, so the next machine loads them instead of compiling each again
(35-41 s a training program on an H200, against about 4 s loaded); ``restore`` puts them in
its cache folder. A program left out, or one the next machine's JAX cannot use, is compiled
again: nothing but time depends on it. The cache must be restored to the same absolute folder
it was written in: JAX names XLA's autotuning cache, a folder inside it, in every program's key
(measured with JAX 0.10.2: the same program misses in another folder).

The archives must stay under ``--limit-mib`` together; with ``--kit`` the limit is what the
64 MiB that travels to the next machine leaves beside the kit and the checkout (``room_mib``;
about 7 MiB with the real dataset's 54 MiB kit), else 12. A state over it makes ``pack`` exit 1
naming the largest entries. ``restore`` refuses
a RUN that already holds a run, so a state never overwrites one. The records hold the run
folder's and the dataset's absolute paths, so both windows must use the same ones
(``gpu_full_run.sh`` puts both under a fixed folder, not under the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from seglib.artifacts import atomic_write

STATE_FILE = "state.tar.gz"
CACHE_FILE = "compile-cache.tar.gz"
LEFT_OUT_FOLDERS = {"checkpoints"}  # anywhere in the run folder
LEFT_OUT_TOP = {"baseline", "tuned", "docs"}  # directly under it
LEFT_OUT_SUFFIXES = (".keras", ".lock")
MIB = 2**20
CARRY_MIB = 64  # what travels to a lent GPU machine: the working tree and the folders it carries
NOT_CARRIED = {"runs", ".git"}  # ignored by git, or git's own: never travel


def room_mib(checkout: Path, kit: Path, previous: Path | None = None, carry_mib: float = CARRY_MIB) -> float:
    """MiB left for what a window hands the next: ``carry_mib`` less the checkout's files and the kit.

    The checkout's files are those git would carry (tracked, or untracked and not ignored),
    or without git every file outside ``runs/`` and ``.git/``; the kit counts wherever it is;
    ``previous`` (the state this window continued from, which the new one replaces) does not.
    """
    kit, previous = kit.resolve(), previous.resolve() if previous else None
    listed = subprocess.run(
        ["git", "-C", str(checkout), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    if listed.returncode == 0:
        files = [checkout / name for name in listed.stdout.decode().split("\0") if name]
    else:
        files = []
        for folder, dirs, names in os.walk(checkout):
            dirs[:] = [d for d in dirs if not (Path(folder) == checkout and d in NOT_CARRIED)]
            files += [Path(folder) / name for name in names]
    files += [p for p in kit.rglob("*")]

    def counted(path: Path) -> bool:
        resolved = path.resolve()
        return path.is_file() and not (previous and resolved.is_relative_to(previous))

    unique = {p.resolve() for p in files if counted(p)}
    return carry_mib - sum(p.stat().st_size for p in unique) / MIB


def carried(run: Path) -> list[Path]:
    """The run folder's files that the next window needs, relative to ``run``, sorted."""
    files = []
    for folder, dirs, names in os.walk(run):
        here = Path(folder).relative_to(run)
        dirs[:] = sorted(d for d in dirs if d not in LEFT_OUT_FOLDERS and not (here == Path(".") and d in LEFT_OUT_TOP))
        files += [here / name for name in sorted(names) if not name.endswith(LEFT_OUT_SUFFIXES)]
    return files


def stalled(run: Path) -> list[str]:
    """The unfinished trials of ``run``'s searches that windows stopped twice or more, described.

    A window's time limit leaves its running trial RUNNING in the search's state; the next
    window hands it back (an interruption) and trains it again from epoch 0, its checkpoint
    not having travelled. Stopped a second time, it ran a whole window without finishing:
    one longer than what a window leaves after its start never finishes.
    """
    found = []
    for state_file in sorted(run.rglob("search_state.json")):
        try:
            state = json.loads(state_file.read_text())
        except ValueError:  # the engine itself names a damaged state when it loads it
            continue
        for job in state.get("jobs", []):
            stops = len(job.get("interruptions") or []) + (job.get("status") == "RUNNING")
            if job.get("status") in ("RUNNING", "QUEUED") and stops >= 2:
                params = state["configs"][job["config_id"]]["params"]
                found.append(
                    f"{state_file.parent.name}: trial {job['parameter_id']} ({job['config_id']}, batch "
                    f"{params.get('batch_size')}, {job['budget']} epochs) stopped {stops} times"
                )
    return found


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
    for trial in stalled(run):
        print(
            f"carry_state: WARNING {trial}: each window trains it again from epoch 0 (its checkpoint does "
            "not travel), so if it needs longer than a window it never finishes; run the profile where one "
            "run has the time (Colab, a GPU of your own) or with a smaller max_budget"
        )
    return target


def pack_cache(cache: Path, out: Path, budget_mib: float) -> Path | None:
    """``out/compile-cache.tar.gz``: the largest programs of ``cache`` that fit in ``budget_mib`` (uncompressed)."""
    found = cache.rglob("*") if cache.is_dir() else []
    entries = sorted((p for p in found if p.is_file()), key=lambda p: (-p.stat().st_size, str(p)))
    if not entries:
        print(f"carry_state: the compile cache {cache} is empty or absent: the next window compiles every program")
        return None
    chosen, used = [], 0
    for entry in entries:
        if used + entry.stat().st_size <= budget_mib * MIB:
            chosen.append(entry)
            used += entry.stat().st_size
    if not chosen:
        print(f"carry_state: no compiled program of {cache} fits in the {budget_mib:.2f} MiB left: none carried")
        return None

    def write(path: Path) -> None:
        with tarfile.open(path, "w:gz") as archive:
            for entry in chosen:
                archive.add(entry, arcname=str(entry.relative_to(cache)), recursive=False)

    target = atomic_write(out / CACHE_FILE, write)
    left = len(entries) - len(chosen)
    print(
        f"carry_state: {target} ({target.stat().st_size / MIB:.2f} MiB, {len(chosen)} of the {len(entries)} "
        f"entries of {cache}" + (f"; {left} over the limit left out, compiled again next time)" if left else ")")
    )
    return target


def restore_cache(previous: Path, cache: Path) -> int:
    """Unpack ``previous/compile-cache.tar.gz`` into ``cache``, keeping entries already there; how many came."""
    archive_path = previous / CACHE_FILE
    if not archive_path.is_file():
        print(f"carry_state: no {CACHE_FILE} in {previous}: every program is compiled again")
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r:gz") as archive:
        # an entry already in the cache is the same program (its name is its key): keep it
        members = [m for m in archive.getmembers() if m.isfile() and not (cache / m.name).exists()]
        archive.extractall(cache, members=members, filter="data")
    print(f"carry_state: {len(members)} files of compiled programs from {archive_path} into {cache}")
    return len(members)


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
    packing.add_argument("--limit-mib", type=float, help="default: room_mib with --kit, else 12")
    packing.add_argument("--cache", type=Path, help="JAX's compilation cache: its programs travel too")
    packing.add_argument("--kit", type=Path, help="the device kit: the limit is what it leaves of the 64 MiB")
    packing.add_argument("--previous", type=Path, help="the state this window continued from (replaced)")
    restoring = commands.add_parser("restore", help="RUN from PREVIOUS/state.tar.gz")
    restoring.add_argument("previous", type=Path)
    restoring.add_argument("run", type=Path)
    restoring.add_argument("--cache", type=Path, help="where the carried compiled programs go")
    args = parser.parse_args(argv)
    if args.command == "pack":
        limit = args.limit_mib
        if limit is None:
            limit = room_mib(Path.cwd(), args.kit, args.previous) if args.kit else 12.0
            if limit <= 0:
                sys.exit(
                    f"carry_state: the checkout {Path.cwd()} and the kit {args.kit} already take "
                    f"{CARRY_MIB - limit:.1f} MiB, over the {CARRY_MIB} MiB that travel to the next machine: "
                    "nothing can travel back; expected a kit that leaves room (build it again, smaller)"
                )
            print(f"carry_state: {limit:.2f} MiB can travel back (the {CARRY_MIB} MiB less the checkout and the kit)")
        state = pack(args.run, args.out, limit)
        if state is not None and args.cache is not None:
            pack_cache(args.cache, args.out, limit - state.stat().st_size / MIB)
    else:
        if args.cache is not None:
            restore_cache(args.previous, args.cache)
        restore(args.previous, args.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
