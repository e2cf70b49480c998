"""seglib's HyperBand run by NNI: schedule, tuner, trial entry point, lifecycle, export, CLI.

In a notebook::

    from seglib import hpo
    experiment = hpo.start("runs/quick/hpo", profile="quick")   # NNI manager + seglib's tuner
    hpo.show_web_ui(experiment.port)                            # Colab proxy / SSH advice
    hpo.watch(experiment)                                       # live progress until done
    experiment.stop(); hpo.export("runs/quick/hpo")             # trials.csv/json, best.json

``hpo.resume(out_dir)`` continues an interrupted experiment, ``hpo.view(out_dir)`` opens a
finished one, ``hpo.connect(out_dir)``/``hpo.stop(out_dir)`` reach one whose manager still runs
(after a kernel restart), ``hpo.run_experiment(...)`` does start-wait-stop-export in one call.
NNI is imported only when an experiment starts; ``seglib.hpo.hyperband`` is pure Python.
"""

from __future__ import annotations

from seglib.hpo.experiment import (
    ExperimentFailed,
    connect,
    HPOExperiment,
    export,
    format_progress,
    plan,
    progress,
    resume,
    run_experiment,
    show_web_ui,
    start,
    stop,
    view,
    watch,
)
from seglib.hpo.hyperband import (
    DEFAULT_ETA,
    DEFAULT_MAX_BUDGET,
    DEFAULT_SEARCH_SPACE,
    Bracket,
    HyperBand,
    Rung,
    brackets,
    pass_epochs,
    search_space,
)
from seglib.profiles import PRECISIONS

__all__ = [
    "DEFAULT_ETA", "DEFAULT_MAX_BUDGET", "DEFAULT_SEARCH_SPACE", "Bracket", "ExperimentFailed",
    "HPOExperiment", "HyperBand", "Rung", "brackets", "cli", "configure_cli", "connect", "export",
    "format_progress", "pass_epochs", "plan", "progress", "resume", "run_experiment",
    "search_space", "show_web_ui", "start", "stop", "view", "watch",
]


def configure_cli(parser) -> None:
    """Options of ``seglib hpo``."""
    from seglib.hpo.experiment import TUNERS

    parser.add_argument("--profile", default="quick", help="settings profile (seglib.profiles): quick or full")
    parser.add_argument("--out", required=True, help="output folder (trials.csv, trials.json, best.json, NNI records)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the profile's, else the embedded dataset)")
    parser.add_argument("--max-budget", "-R", type=int, default=None, help="HyperBand R in epochs (profile default)")
    parser.add_argument("--eta", type=int, default=None, help="HyperBand η (profile default)")
    parser.add_argument("--max-trials", type=int, default=None, help="cap on trials (default: one full HyperBand pass)")
    parser.add_argument("--concurrency", type=int, default=None, help="trials at once (profile default)")
    parser.add_argument("--tuner", choices=TUNERS, default="hyperband",
                        help="seglib's HyperBand, or NNI's random search at HyperBand's epoch budget")
    parser.add_argument("--max-epochs", type=int, default=None, help="random search: total epochs (default: a HyperBand pass's)")
    parser.add_argument("--port", type=int, default=None, help="web UI port on localhost (default: first free from 8080)")
    parser.add_argument("--backend", default=None, help="Keras backend for the trials (jax, tensorflow; default: environment)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configurations drawn and of training")
    parser.add_argument("--mixed-precision", default=None, choices=PRECISIONS,
                        help="the trials' precision (default: the profile's, fp32); bf16 on Ampere or newer GPUs")
    parser.add_argument("--resume", action="store_true", help="resume the interrupted experiment in --out")
    parser.add_argument("--view", action="store_true", help="open the finished experiment in --out read-only (Ctrl-C ends)")
    parser.add_argument("--stop", action="store_true", help="stop the experiment in --out that is still running")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")


def cli(args) -> int:
    """Run ``seglib hpo`` to completion and print where the export is."""
    import time
    from pathlib import Path

    from seglib.profiles import get_profile

    if args.stop:
        stop(args.out)
        print(f"stopped the experiment in {args.out} (if one was running); resume it with --resume")
        return 0
    if args.view:
        experiment = view(args.out, port=args.port)
        show_web_ui(experiment.port)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            experiment.stop()
        return 0
    profile = get_profile(args.profile, max_budget=args.max_budget, eta=args.eta,
                          concurrency=args.concurrency)
    result = run_experiment(
        args.out, resume_existing=args.resume, timeout=args.timeout,
        show=lambda p: print(format_progress(p), flush=True),
        profile=profile, data=args.data, tuner=args.tuner, max_trials=args.max_trials,
        max_epochs=args.max_epochs, port=args.port, seed=args.seed, backend=args.backend,
        mixed_precision=args.mixed_precision,
    )
    summary, best = result["summary"], result["best"]
    print(f"{summary['trials']} trials, {summary['epochs_trained']} epochs trained "
          f"(planned {summary['epochs_planned']}), statuses {summary['statuses']}")
    print(f"best: val loss {best['value']} with {best['params']} ({best['config_id']} at {best['budget']} epochs)")
    out = Path(args.out)
    print(f"wrote {out / 'trials.csv'}, {out / 'trials.json'}, {out / 'best.json'}")
    return 0
