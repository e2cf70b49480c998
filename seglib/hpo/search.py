"""Run a search (HyperBand, ASHA, BOHB, or random search at equal epochs) in one folder, on an engine.

``tune`` decides what the search will do (:func:`plan`), prepares the folder once (split,
search state, the settings every trial reads), runs it on the settings' engine — NNI
(``seglib.hpo.engines.nni``) or in-process (``seglib.hpo.engines.local``) — and exports it.
Run again on the same folder it continues where the last run stopped, whichever process
died: nothing a finished trial trained is trained again.

One driver at a time owns a folder (``driver.lock``: its pid and host). The engines stop
everything they started when the driver ends, however it ends, so no process of a search
outlives it; trials interrupted that way are handed out again when the search is resumed.
"""

from __future__ import annotations

import logging
import time

from seglib.artifacts import Experiment, ExperimentPaths, read_json, write_json
from seglib.hpo.driver import DriverLock, driver
from seglib.hpo.export import export, load_search, progress
from seglib.hpo.hyperband import Search, brackets, pass_epochs
from seglib.hpo.outcome import ENVIRONMENT_ERRNOS, describe, revisit
from seglib.hpo.runtime import read_trial_settings, write_trial_settings
from seglib.hpo.space import search_space
from seglib.settings import Settings

log = logging.getLogger("seglib.hpo.search")


class SearchHalted(RuntimeError):
    """The search stopped handing out trials because of the machine (disk full, out of memory)."""


class SearchExists(FileExistsError):
    """The folder already holds a search, and resuming was not asked for."""


def plan(settings: Settings, tuner: str | None = None, max_epochs: int | None = None) -> dict:
    """R, η, trials, epochs and concurrency ``tuner`` (default: the settings' own) will use under ``settings``.

    HyperBand and BOHB run one full pass (every bracket), capped at ``max_trials``. ASHA and
    random search get the epochs that pass trains with warm start, or ``max_epochs`` (for
    random search, what the run's main search really spent, as notebook 03 passes): equal
    epochs. ASHA's trials depend on its losses: the plan counts them as if every trial
    succeeded in arrival order.
    """
    tuner = settings.tuner if tuner is None else tuner
    if tuner not in Search.registry:
        raise ValueError(f"unknown tuner {tuner!r}; expected one of {sorted(Search.registry)}")
    totals = pass_epochs(settings.max_budget, settings.eta)
    trials, epochs = Search.registry[tuner].planned(settings, max_epochs)
    return {
        "tuner": tuner,
        "max_budget": settings.max_budget,
        "eta": settings.eta,
        "trials": trials,
        "planned_epochs": epochs,
        "concurrency": settings.concurrency,
        "seed": settings.seed,
        "pass": totals,
        "brackets": [[(r.n_configs, r.budget) for r in b.rungs] for b in brackets(settings.max_budget, settings.eta)],
    }


def tune(
    out_dir,
    settings: Settings | None = None,
    tuner: str | None = None,
    *,
    resume="auto",
    split_file=None,
    max_epochs: int | None = None,
    space: dict | None = None,
    backend: str | None = None,
    show=None,
    timeout: float | None = None,
    **engine_args,
) -> Experiment:
    """Run the search in ``out_dir`` to its end and return its export.

    ``tuner``: which search a new folder gets (default: ``settings.tuner``); a folder that
    holds a search continues it (another ``tuner`` named is refused). ``resume``: "auto"
    continues a search already in the folder (and re-exports a finished one at once), True
    requires one, False refuses one. A new search needs ``settings``;
    ``split_file`` (a run's ``data/split.npz``) gives the patches' split, else it is made
    here. ``show(progress)`` is called as the search advances. ``engine_args`` go to the
    engine (NNI: ``port``, ``training_service``, ``nni_manager_ip``, ``on_web_ui``).
    Raises SearchHalted (after exporting) when the machine stopped the search.

    The folder's lock is taken before anything is written into it, so two commands started
    at once on one new folder cannot both prepare it: the second is refused.
    """
    paths = ExperimentPaths.of(out_dir)
    if driver(paths) is not None:
        with DriverLock(paths):  # refused, naming the running driver (a race lost to its end: nothing done)
            pass
    _check_resume(paths, resume)  # refused before anything is written
    if engine_args.get("port") is not None:
        from seglib.hpo.engines.nni import check_port

        check_port(engine_args["port"], paths.root)
    if not paths.experiment_file.is_file() and settings is None:
        raise ValueError("a new search needs settings (seglib.settings.profile(...))")
    with DriverLock(paths):
        _check_resume(paths, resume)  # another command may have prepared it meanwhile
        if not paths.experiment_file.is_file():
            _prepare(paths, settings, tuner, split_file, max_epochs, space, backend)
        _check_tuner(paths, tuner)
        _revisit(paths)
        if load_search(paths).finished:
            return export(paths.root)  # rewritten: a damaged export is made whole again
        _check_trial_code(paths)
        record = read_json(paths.experiment_file)
        halted = None
        try:
            if record["engine"] == "local":
                from seglib.hpo.engines import local

                local.run_trials(paths, record, show=show, timeout=timeout)
            else:
                from seglib.hpo.engines import nni

                nni.run_experiment(paths, record, show=show, timeout=timeout, **engine_args)
        except OSError as error:
            # A full disk that halted the search may not take the state that says so either; the
            # trial it stopped is recorded as running, and a resumed search hands it out again.
            if error.errno not in ENVIRONMENT_ERRNOS:
                raise
            halted = describe(error)
        finally:
            try:
                experiment = export(paths.root)
            except OSError as error:
                if error.errno not in ENVIRONMENT_ERRNOS:
                    raise
                halted = halted or describe(error)  # the exports are written again by the next run
    halted = halted or progress(paths.root)["halted"]
    if halted:
        raise SearchHalted(
            f"the search in {paths.root} halted: {halted}. The trials it stopped are kept and will run again: "
            f"fix the cause (free disk space, lower concurrency), then continue it with "
            f"`seglib hpo --out {paths.root} --resume` (or run the notebook again)"
        )
    return experiment


def _check_resume(paths: ExperimentPaths, resume) -> None:
    if paths.experiment_file.is_file() and resume is False:
        raise SearchExists(
            f"{paths.root} already holds a search ({_state_line(paths)}); continue it with "
            f"`seglib hpo --out {paths.root} --resume`, or choose a new folder"
        )
    if not paths.experiment_file.is_file() and resume is True:
        raise FileNotFoundError(f"{paths.experiment_file} not found: {paths.root} holds no search to resume")


def _check_tuner(paths: ExperimentPaths, tuner: str | None) -> None:
    held = read_json(paths.experiment_file)["plan"]["tuner"]
    if tuner is not None and tuner != held:
        raise SearchExists(
            f"{paths.root} holds a search of tuner {held}, not {tuner}: continue it with --tuner {held} "
            "(or no --tuner), or choose a new folder"
        )


def _prepare(paths: ExperimentPaths, settings: Settings, tuner, split_file, max_epochs, space, backend) -> None:
    """Write everything a search needs before its first trial; ``experiment.json`` last."""
    from seglib.data import load_split, make_split, prepare, save_split

    the_plan = plan(settings, tuner, max_epochs)
    space = search_space() if space is None else space
    search = Search.registry[the_plan["tuner"]].create(settings, space, the_plan["planned_epochs"])  # checks the space
    if split_file is not None:
        index = load_split(split_file)
    else:
        index = make_split(prepare(settings.data, settings.patch_size), settings)
    save_split(paths.split_file, index)
    search.save(paths.state_file)
    write_trial_settings(paths, settings, backend=backend, concurrency=settings.concurrency)
    write_json(
        paths.experiment_file,
        {
            "engine": settings.engine,
            "plan": the_plan,
            "settings": settings.to_dict(),
            "search_space": space,
            "created": time.time(),
            "sessions": [],
        },
    )


def _check_trial_code(paths: ExperimentPaths) -> None:
    """What every trial reads, read once here: damaged, it stops the search before a trial starts, by name.

    (A trial that cannot read it would fail without a record of its own in NNI's process.)
    """
    from seglib.data import load_split

    producer = "a new search (`seglib hpo --out NEW_FOLDER`)"
    read_trial_settings(paths.settings_file)
    load_split(paths.split_file, producer)


def _revisit(paths: ExperimentPaths) -> None:
    """Before continuing: pairs whose outcome does not stand (record gone, a damaged file) go back in the queue."""
    search = Search.load(paths.state_file)
    lines = revisit(search, paths)
    if lines:
        search.save(paths.state_file)
    for line in lines:
        log.warning("%s", line)


def _state_line(paths: ExperimentPaths) -> str:
    p = progress(paths.root)
    return f"{p['succeeded'] + p['diverged']} of {p['planned']} trials finished" + (", halted" if p["halted"] else "")
