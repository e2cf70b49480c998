"""The trial process NNI starts: ``python -m seglib.hpo.trial_process --settings trial_code/settings.json``.

It sets its environment before Keras is imported (``seglib.hpo.runtime``), takes its
parameters from NNI, runs :func:`seglib.hpo.trial.run_job` and reports through NNI's trial
API; it stops itself when its manager is gone, so no trial outlives its search. Outside an
experiment ``python -m seglib.hpo.trial_process --out DIR`` trains the profile's defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from seglib.artifacts import ExperimentPaths
from seglib.hpo.outcome import Interrupted
from seglib.hpo.runtime import configure_environment, read_trial_settings, write_trial_settings
from seglib.hpo.trial import Assignment, TrialContext, run_job
from seglib.settings import SettingError

log = logging.getLogger("seglib.hpo.trial_process")

MANAGER_POLL_SECONDS = 2.0
LOST_GRACE_SECONDS = 20.0  # after its manager is gone, a trial records itself and exits within this


class NNIReporter:
    """Reports through NNI's trial API; on its own (no experiment) it reports to the log."""

    def __init__(self, process_start: float):
        self.process_start = process_start
        in_experiment = bool(os.environ.get("NNI_TRIAL_JOB_ID"))
        try:
            import nni
        except ImportError:
            if in_experiment:
                raise
            nni = None  # on its own (a benchmark on a machine without NNI) a trial needs no NNI
        self.nni = nni if in_experiment else None
        self.trial_id = nni.get_trial_id() if self.nni is not None else "STANDALONE"

    def parameters(self) -> dict:
        return dict(self.nni.get_next_parameter() or {}) if self.nni is not None else {}

    def intermediate(self, value: float) -> None:
        if self.nni is not None:
            self._send(self.nni.report_intermediate_result, value)

    def final(self, result: dict) -> None:
        if self.nni is not None:
            self._send(self.nni.report_final_result, result)
        else:
            log.info("final result: %s", result)

    def _send(self, report, value) -> None:
        try:
            report(value)
        except OSError as error:  # requests' ConnectionError is an OSError
            raise Interrupted(f"cannot report to the NNI manager ({error})") from error


def watch_manager(on_lost) -> threading.Thread | None:
    """Call ``on_lost()`` when the NNI manager that started this trial is gone.

    NNI's local training service starts a trial through a shell, so the manager is the
    shell's parent; if it is killed the trial would keep training as an orphan while a
    resumed search starts the same pair again.
    """
    if not os.environ.get("NNI_TRIAL_JOB_ID"):
        return None
    import psutil

    ancestors = [p for p in psutil.Process().parents() if p.pid > 1]
    manager = next((p for p in ancestors if "node" in p.name().lower()), ancestors[1] if len(ancestors) > 1 else None)
    if manager is None:
        return None

    def poll():
        while manager.is_running():
            time.sleep(MANAGER_POLL_SECONDS)
        on_lost()

    thread = threading.Thread(target=poll, name="seglib-manager-watch", daemon=True)
    thread.start()
    return thread


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP interrupt the trial as Ctrl-C does, so it records INTERRUPTED."""

    def interrupt(signum, frame):
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def standalone_context(out_dir, profile_name: str, data) -> tuple[TrialContext, dict]:
    """A context for a trial run on its own: the profile's settings and split, in ``out_dir``."""
    from seglib.data import make_split, prepare, save_split
    from seglib.settings import profile

    settings = profile(profile_name, **({} if data is None else {"data": str(data)}))
    paths = ExperimentPaths.of(out_dir)
    save_split(paths.split_file, make_split(prepare(settings.data, settings.patch_size), settings))
    write_trial_settings(paths, settings)
    _, settings, runtime = read_trial_settings(paths.settings_file)
    return TrialContext(paths, settings, compile_cache_dir=runtime["compile_cache_dir"]), runtime


def main(argv: list[str] | None = None) -> int:
    process_start = _process_start_time()
    parser = argparse.ArgumentParser(prog="python -m seglib.hpo.trial_process", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="the experiment's trial_code/settings.json (default: run on its own)")
    parser.add_argument("--out", default="runs/trial", help="output folder when run on its own")
    parser.add_argument("--profile", default="quick", help="profile when run on its own")
    parser.add_argument("--data", default=None, help="dataset folder when run on its own")
    parser.add_argument(
        "--params",
        default=None,
        help='JSON merged over the defaults when run on its own, e.g. \'{"TRIAL_BUDGET": 2, "CONFIG_ID": "mine"}\'',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.settings:
        paths, settings, runtime = read_trial_settings(Path(args.settings).resolve())
        context = TrialContext(paths, settings, runtime.get("cache_dir"), runtime.get("compile_cache_dir"))
    else:
        context, runtime = standalone_context(args.out, args.profile, args.data)
    configure_environment(runtime)
    _stop_on_signals()
    reporter = NNIReporter(process_start)
    parameters = {**context.settings.hyperparameters(), **reporter.parameters()}
    if args.params:
        import json

        parameters.update(json.loads(args.params))
    job = Assignment.from_parameters(parameters, context.settings.max_budget, reporter.trial_id)
    watch_manager(_lost_manager)
    try:
        record = run_job(context, job, reporter)
    except SettingError as error:
        print(f"seglib trial: {error}", file=sys.stderr)
        return 1
    print(_summary_line(record))
    return 0


def _summary_line(record: dict) -> str:
    import json

    return json.dumps({k: record.get(k) for k in ("key", "status", "epochs_trained", "resumed_from", "final")})


def _lost_manager() -> None:
    """The manager died: stop the trial as Ctrl-C would, so it records itself INTERRUPTED (the
    resumed search reruns the pair from its last epoch's checkpoint); exit anyway after a grace
    period if the main thread is stuck in a long native call."""
    import _thread

    sys.stderr.write("seglib trial: the NNI manager is gone; stopping this trial\n")
    sys.stderr.flush()
    _thread.interrupt_main()
    timer = threading.Timer(LOST_GRACE_SECONDS, os._exit, args=(3,))
    timer.daemon = True
    timer.start()


def _process_start_time() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or restricted: time from here instead
        return time.time()


if __name__ == "__main__":
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
