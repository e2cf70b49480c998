"""Notebooks 01 -> 04 executed by papermill, and the run folder they share.

A run folder holds everything one run produced; each notebook reads what the previous one
wrote there and nothing else (no hidden state)::

    run.json            resolved profile, data, backend, hardware (written by 01_data)
    data/               split indices, class shares, sample patches
    baseline/           the pre-HPO model: history, metrics, evaluation arrays
    hpo/, random/       HyperBand and random search at equal budget: trials.csv/json, best.json
    tuned/              the best configuration retrained like the baseline
    docs/               the report (or wherever --docs points)
    01_data.ipynb ...   the executed notebooks
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import seglib
from seglib.profiles import PROFILES, Profile, get_profile

NOTEBOOKS = ("01_data", "02_baseline", "03_hyperband_hpo", "04_report")
RUN_FILE = "run.json"
EMBEDDED_LABEL = "embedded default dataset"
KERNEL_NAME = "seglib-python"


# ---------------------------------------------------------------------------------------
# The run folder


@dataclass(frozen=True)
class Run:
    """One run folder: where it is, the profile it ran with, its data and its stamp."""

    out_dir: Path
    profile: Profile
    data: str | None  # dataset folder; None = the embedded default
    stamp: dict

    def folder(self, name: str) -> Path:
        """A sub-folder of the run, created on first use."""
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def data_label(self) -> str:
        return self.stamp["data_label"]

    @property
    def label(self) -> str:
        """The one-line stamp every figure carries: data, profile, backend and hardware."""
        s = self.stamp
        return f"data: {s['data_label']} · profile: {s['profile']} · {s['backend']} · {s['hardware']}"


def write_json(path: Path, value) -> Path:
    """Write ``value`` as indented JSON (NaN/inf as null, so any JSON reader can load it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(value), indent=2, default=_json_default) + "\n")
    return path


def read_json(path: Path, what: str = "", producer: str = ""):
    """Read a run artefact, naming the notebook that should have written it when it is missing."""
    path = Path(path)
    if not path.is_file():
        hint = f" (written by {producer}: run it first)" if producer else ""
        raise FileNotFoundError(f"{what or 'run artefact'} not found: expected {path}{hint}")
    return json.loads(path.read_text())


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def hardware() -> str:
    """A short description of this machine: GPU name if any, else CPU model and core count."""
    from seglib.colab import gpu_name

    gpu = gpu_name()
    cores = os.cpu_count() or 1
    if gpu:
        return f"GPU {gpu}"
    return f"CPU {cpu_model()} ({cores} cores)"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def keras_backend() -> str:
    """The Keras backend this process will use, without importing Keras."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def start_run(out_dir, profile: str = "quick", data: str | None = None, overrides: dict | None = None) -> Run:
    """Resolve the profile with ``overrides``, stamp the run and write ``run.json`` (01_data)."""
    overrides = dict(overrides or {})
    check_overrides(overrides)
    resolved = get_profile(profile, **overrides)
    data = data if data is not None else resolved.data
    resolved = resolved.replace(data=str(data) if data is not None else None)
    stamp = {
        "profile": resolved.name + (" (" + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")" if overrides else ""),
        "overrides": overrides,
        "data_label": data_label(data),
        "backend": keras_backend(),
        "hardware": hardware(),
        "python": platform.python_version(),
        "seglib": seglib.__version__,
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out_dir = Path(out_dir)
    write_json(out_dir / RUN_FILE, {"profile": resolved.to_dict(), "data": resolved.data, "stamp": stamp})
    return Run(out_dir, resolved, resolved.data, stamp)


def open_run(out_dir) -> Run:
    """The run that 01_data started in ``out_dir``."""
    out_dir = Path(out_dir)
    record = read_json(out_dir / RUN_FILE, "run record", "notebooks/01_data")
    return Run(out_dir, Profile(**record["profile"]), record["data"], record["stamp"])


def data_label(data) -> str:
    """How the report names the data: the dataset folder's name, or the embedded default."""
    if data is None:
        return EMBEDDED_LABEL
    path = Path(data)
    return f"{path.name} ({path.parent.name})" if path.parent.name else path.name


def check_overrides(overrides: dict) -> None:
    """Raise ValueError naming any key that is not a profile field."""
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {unknown}; expected some of {sorted(fields)}")


# ---------------------------------------------------------------------------------------
# Data and models in the run folder (what the notebooks call)

SPLIT_FILE = "split.npz"
SUBSAMPLE_SEED = 0


@dataclass
class Arrays:
    """Model inputs of one run: float32 scaled images, uint8 labels; raw uint8 validation images."""

    x_train: "np.ndarray"
    y_train: "np.ndarray"
    x_val: "np.ndarray"
    y_val: "np.ndarray"
    x_test: "np.ndarray"
    y_test: "np.ndarray"
    images_val: "np.ndarray"


def load_patches(run: Run):
    """The run's patches (from seglib's cache after the first call)."""
    from seglib.data import prepare

    return prepare(run.data, patch_size=run.profile.patch_size)


def prepare_data(run: Run) -> dict:
    """Patches, the optional subsample and the split; writes data/split.npz and data/summary.json.

    Indices are into the full prepared patches, so later notebooks rebuild the same arrays
    from the cache without copying patches into the run folder.
    """
    import numpy as np
    from seglib.data import CLASS_NAMES, split, split_class_shares

    patches = load_patches(run)
    chosen = np.arange(len(patches))
    if run.profile.max_patches is not None and run.profile.max_patches < len(patches):
        rng = np.random.default_rng(SUBSAMPLE_SEED)
        chosen = np.sort(rng.choice(len(patches), run.profile.max_patches, replace=False))
    subset = patches.subset(chosen)
    local = split(subset, run.profile.split)
    indices = {name: chosen[np.sort(index)] for name, index in local.items()}
    folder = run.folder("data")
    np.savez(folder / SPLIT_FILE, **indices)
    shares = split_class_shares(subset, local)
    tiles = subset.tile_of_patch
    summary = {
        "split": run.profile.split,
        "patch_size": run.profile.patch_size,
        "patches": int(len(chosen)),
        "patches_prepared": int(len(patches)),
        "pairs": len(patches.files),
        "counts": {name: int(len(index)) for name, index in indices.items()},
        "tiles": {name: sorted(set(tiles[np.sort(index)])) for name, index in local.items()},
        "class_shares": {name: dict(zip(CLASS_NAMES, map(float, value))) for name, value in shares.items()},
        "off_palette": patches.off_palette_lines(),
        "prepare_seconds": float(patches.seconds),
    }
    write_json(folder / "summary.json", summary)
    return summary


def load_arrays(run: Run) -> Arrays:
    """The split that 01_data wrote, as model inputs."""
    import numpy as np

    path = run.out_dir / "data" / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"split indices not found: expected {path} (written by notebooks/01_data: run it first)")
    index = dict(np.load(path))
    patches = load_patches(run)
    take = {name: patches.subset(index[name]) for name in ("train", "val", "test")}
    return Arrays(
        x_train=take["train"].scaled(), y_train=np.asarray(take["train"].labels),
        x_val=take["val"].scaled(), y_val=np.asarray(take["val"].labels),
        x_test=take["test"].scaled(), y_test=np.asarray(take["test"].labels),
        images_val=np.asarray(take["val"].images),
    )


def initial_params(run: Run) -> dict:
    """The profile's starting hyperparameters, named as in the search space."""
    p = run.profile
    return {"batch_size": p.batch_size, "learning_rate": p.learning_rate, "activation_type": p.activation}


def train_and_record(run: Run, arrays: Arrays, params: dict, name: str, seed: int = 0) -> dict:
    """Train with ``params`` for the profile's epochs; save the model and its evaluation in ``name/``."""
    from seglib.report import record_model
    from seglib.train import train

    p = run.profile
    result = train(
        arrays.x_train, arrays.y_train, arrays.x_val, arrays.y_val,
        epochs=p.epochs, batch_size=int(params["batch_size"]), learning_rate=float(params["learning_rate"]),
        activation=params["activation_type"], base_filters=p.base_filters, depth=p.depth, seed=seed,
        mixed_precision=p.precision,
    )
    folder = run.folder(name)
    result.model.save(folder / "model.keras")
    extra = {
        "epochs_trained": result.epochs_trained, "seconds": result.seconds, "diverged": result.diverged,
        "message": result.message, "best_val_loss": result.best_val_loss, "backend": keras_backend(),
    }
    return record_model(folder, result.model, result.history, arrays, params, extra)


SEARCH_FOLDERS = {"hyperband": "hpo", "random": "random"}


def run_search(run: Run, tuner: str = "hyperband", max_epochs: int | None = None) -> dict:
    """Run one NNI experiment on the run's split (seglib.hpo) with a live progress view.

    ``tuner`` "hyperband" writes ``hpo/``; "random" writes ``random/`` with ``max_epochs``
    epochs in all (HyperBand's spend, for the equal-budget comparison). A finished experiment
    already in the folder is reused; an interrupted one is resumed. Returns the normalised
    export (:func:`seglib.report.load_experiment`).
    """
    from seglib.hpo import experiment as nni_experiment
    from seglib.report import load_experiment

    if tuner not in SEARCH_FOLDERS:
        raise ValueError(f"unknown tuner {tuner!r}; expected one of {sorted(SEARCH_FOLDERS)}")
    folder = run.out_dir / SEARCH_FOLDERS[tuner]
    finished = read_json(folder / "trials.json").get("summary", {}).get("finished") if (folder / "trials.json").is_file() else False
    if finished:
        print(f"{folder} already holds a finished {tuner} experiment: reusing it (delete the folder to rerun)")
        return load_experiment(folder)
    if (folder / "experiment.json").is_file():
        experiment = nni_experiment.resume(folder)
    else:
        experiment = nni_experiment.start(
            folder, profile=run.profile, data=run.data, split_file=run.out_dir / "data" / SPLIT_FILE,
            tuner=tuner, max_epochs=max_epochs,
        )
    if experiment.port:
        nni_experiment.show_web_ui(experiment.port)  # Colab's authenticated proxy, or how to tunnel
    try:
        nni_experiment.watch(experiment)
    finally:
        experiment.stop()
    nni_experiment.export(folder)
    return load_experiment(folder)


def best_params(experiment: dict) -> dict:
    """The best configuration of an exported experiment, with the search space's names."""
    best = experiment["best"]
    params = best.get("params") or best.get("parameters")
    if not params:
        raise ValueError(f"best.json in {experiment.get('folder')} has no 'params': found keys {sorted(best)}")
    return dict(params)


# ---------------------------------------------------------------------------------------
# Executing the notebooks


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def find_notebooks_dir(start: Path | None = None) -> Path:
    """The repository's ``notebooks/`` folder (seglib is installed editable from the checkout)."""
    candidates = [Path(start)] if start else [Path(seglib.__file__).resolve().parents[1] / "notebooks"]
    for folder in candidates:
        missing = [name for name in NOTEBOOKS if not (folder / f"{name}.ipynb").is_file()]
        if not missing:
            return folder
    raise FileNotFoundError(
        f"notebooks not found: expected {', '.join(n + '.ipynb' for n in NOTEBOOKS)} in {candidates[0]}; "
        "install seglib editable from a checkout (pip install -e .) or pass --notebooks DIR"
    )


def ensure_kernel(prefix: Path | None = None) -> str:
    """A Jupyter kernelspec that runs this interpreter; returns its name.

    The spec lives in a private folder put first on JUPYTER_PATH, so a user-wide ``python3``
    kernel pointing at another Python cannot be picked up by mistake, and nothing outside
    that folder is written.
    """
    prefix = Path(prefix or Path(tempfile.gettempdir()) / f"seglib-jupyter-{os.getuid()}")
    spec_dir = prefix / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"seglib ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    paths = os.environ.get("JUPYTER_PATH", "")
    if str(prefix) not in paths.split(os.pathsep):
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(prefix), *filter(None, [paths])])
    return KERNEL_NAME


def notebook_parameters(path: Path) -> set[str]:
    """Names defined in a notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def run_notebook(source: Path, target: Path, parameters: dict, kernel: str, log_output: bool = False) -> None:
    """Execute one notebook with papermill; raise NotebookFailed naming notebook and cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    accepted = {k: v for k, v in parameters.items() if k in notebook_parameters(source)}
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=accepted,
            kernel_name=kernel,
            cwd=str(target.parent),
            progress_bar=False,
            log_output=log_output,
        )
    except PapermillExecutionError as error:
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"notebook {source.name} failed in cell {error.cell_index} (execution count {error.exec_count}, "
            f"starting {first_line!r}): {error.ename}: {error.evalue}. Executed copy: {target}"
        ) from None


def run_pipeline(
    out_dir,
    profile: str = "quick",
    data: str | None = None,
    overrides: dict | None = None,
    notebooks_dir: Path | None = None,
    docs_dir: Path | None = None,
    log_output: bool = False,
) -> list[Path]:
    """Execute 01 -> 04 into ``out_dir``; return the executed notebooks' paths."""
    check_overrides(dict(overrides or {}))
    get_profile(profile, **dict(overrides or {}))  # a bad value fails here, not in 01's kernel
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    source_dir = find_notebooks_dir(notebooks_dir)
    kernel = ensure_kernel()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it: no C++ log noise
    parameters = {
        "PROFILE": profile,
        "OUT_DIR": str(out_dir),
        "DATA": str(Path(data).resolve()) if data and data != "kaggle" else data,
        "OVERRIDES": dict(overrides or {}),
        "DOCS_DIR": str(Path(docs_dir).resolve()) if docs_dir else None,
    }
    executed = []
    for name in NOTEBOOKS:
        target = out_dir / f"{name}.ipynb"
        print(f"[seglib run] {name} ...", flush=True)
        started = dt.datetime.now()
        run_notebook(source_dir / f"{name}.ipynb", target, parameters, kernel, log_output)
        print(f"[seglib run] {name} done in {(dt.datetime.now() - started).total_seconds():.0f} s", flush=True)
        executed.append(target)
    return executed


def parse_parameters(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings to a dict; values are Python literals when they parse as one."""
    result = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p expects KEY=VALUE, got {pair!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        result[key.strip()] = value
    return result


def configure_cli(parser: argparse.ArgumentParser) -> None:
    """Options of ``seglib run``."""
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="run settings (default quick)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: artefacts and executed notebooks")
    parser.add_argument("--data", default=None, help="dataset folder, or 'kaggle' to download (default: embedded)")
    parser.add_argument("--notebooks", type=Path, default=None, help="folder of the four notebooks (default: the checkout's)")
    parser.add_argument("--docs", type=Path, default=None, help="where the report goes (default OUT/docs; 'docs' rewrites the committed one)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="override a profile setting, e.g. -p epochs=2 -p max_patches=400 (repeatable)",
    )
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")


def cli(args: argparse.Namespace) -> int:
    """``seglib run``: execute the notebooks; exit non-zero naming the notebook and cell that failed."""
    try:
        overrides = parse_parameters(args.param)
        run_pipeline(args.out, args.profile, args.data, overrides, args.notebooks, args.docs, args.log_output)
    except (NotebookFailed, FileNotFoundError, ValueError) as error:
        print(f"seglib run: {error}", file=sys.stderr)
        return 1
    docs = args.docs or Path(args.out) / "docs"
    print(f"[seglib run] report: {Path(docs) / 'hyperparameter-optimization.md'}")
    return 0
