"""Google Colab set-up: install cell, GPU check, the run folder on Drive, Kaggle download.

In Colab every notebook runs in a runtime of its own, so the run folder lives on Google
Drive (``MyDrive/seglib/runs/<profile>`` unless ``OUT_DIR`` says otherwise): 02-04 find what
01 left there, and a disconnected search continues from it. The Kaggle dataset is downloaded
to Drive once and reused by later runtimes. Outside Colab the run folder is
``runs/<profile>`` and nothing else changes. Kaggle credentials are read from Colab secrets
or environment variables into this process's environment only: never written, printed or
logged.

Outside Colab, ``python -m seglib.colab download`` downloads the dataset (kagglehub's cache,
once) and prints only its folder, for ``DATA=$(...)`` in a shell.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from seglib.system import gpu_name

# The project has no public remote yet: this placeholder is the one place to change.
REPOSITORY_URL = "https://github.com/YOUR-GITHUB-USER/seglib"
REPOSITORY_BRANCH = "main"
GIT_SOURCE = f"git+{REPOSITORY_URL}.git@{REPOSITORY_BRANCH}"
PATCHIFY_REQUIREMENT = "patchify==0.2.3"
NNI_REQUIREMENT = "nni==3.0"

KAGGLE_DATASET = "humansintheloop/semantic-segmentation-of-aerial-imagery"
KAGGLE_FOLDER = "Semantic segmentation dataset"
KAGGLE_DATA = "kaggle"  # the DATA parameter value that asks for a Kaggle download
KAGGLE_SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")
COLAB_DRIVE = "/content/drive"  # where Colab mounts Google Drive
DRIVE_MOUNT = os.environ.get("SEGLIB_DRIVE_MOUNT", COLAB_DRIVE)  # the Colab emulation test's stand-in is elsewhere
DRIVE_FOLDER = "seglib"  # under MyDrive: runs/<profile>/ and the Kaggle download


def in_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def notebook_url(notebook: str) -> str:
    """The Colab URL that opens ``notebooks/<notebook>.ipynb`` from the repository."""
    github = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{REPOSITORY_BRANCH}/notebooks/{notebook}.ipynb"


def badge(notebook: str) -> str:
    """The "Open in Colab" markdown badge for one notebook."""
    image = "https://colab.research.google.com/assets/colab-badge.svg"
    return f"[![Open In Colab]({image})]({notebook_url(notebook)})"


def install_commands(source: str = GIT_SOURCE) -> list[str]:
    """The pip commands that install seglib from ``source`` and change none of Colab's packages.

    nni 3.0 and patchify 0.2.3 go in with --no-deps: nni pins typeguard<4.1.3 and
    filelock<3.12 and patchify declares numpy<2, so a normal install would downgrade three
    packages under Colab's running kernel (docs/colab.md). seglib declares what they need.
    """
    return [
        f'pip install -q "seglib[colab] @ {source}"',
        f"pip install -q --no-deps {NNI_REQUIREMENT} {PATCHIFY_REQUIREMENT}",
    ]


def install_cell() -> str:
    """The notebooks' install cell (right after the parameters): in Colab, install seglib once.

    ``SEGLIB_SOURCE`` (a parameter) says where from: this repository on GitHub, or a wheel or
    a checkout on Google Drive (mounted first). It cannot import seglib, so the commands are
    spelled out, formatted as ruff formats the notebooks; tests check that every notebook's
    cell equals this text and run it.
    """
    no_deps = install_commands()[1].split()[3:]  # after "pip install -q"
    return (
        "# Colab only: install seglib from SEGLIB_SOURCE, changing none of Colab's packages (no restart).\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules and importlib.util.find_spec("seglib") is None:\n'
        f'    if SEGLIB_SOURCE.startswith("{COLAB_DRIVE}"):\n'
        "        from google.colab import drive\n"
        "\n"
        f'        drive.mount("{COLAB_DRIVE}")\n'
        '    source = SEGLIB_SOURCE if "://" in SEGLIB_SOURCE else "file://" + SEGLIB_SOURCE\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]\n'
        '    subprocess.run([*pip, f"seglib[colab] @ {source}"], check=True)\n'
        f"    subprocess.run([*pip, {', '.join(json.dumps(a) for a in no_deps)}], check=True)"
    )


def check_gpu() -> str | None:
    """Print which GPU this runtime has, or how to get one; return its name."""
    name = gpu_name()
    if name:
        print(f"GPU: {name}")
    else:
        print("No GPU found: training will be slow. In Colab: Runtime > Change runtime type > GPU.")
    return name


def mount_drive(mount_point: str | None = None) -> Path:
    """Mount Google Drive (Colab only), so data and runs outlive the runtime; return MyDrive."""
    from google.colab import drive  # only importable inside Colab

    mount_point = mount_point or DRIVE_MOUNT
    my_drive = Path(mount_point) / "MyDrive"
    if not my_drive.is_dir():
        try:
            drive.mount(mount_point)
        except Exception as error:  # refused access, or no Drive in this runtime
            raise RuntimeError(
                f"Google Drive is not mounted ({error}): allow this notebook to access your Drive when asked, "
                "or set OUT_DIR to a folder under /content (it goes when the runtime ends, and later notebooks, "
                "each in a runtime of its own, will not find it)"
            ) from None
    return my_drive


def run_folder(out_dir: str | None, profile: str) -> str:
    """``out_dir``, or the profile's default: on Drive in Colab, ``runs/<profile>`` elsewhere."""
    if out_dir is not None:
        return str(out_dir)
    if in_colab():
        return str(Path(DRIVE_MOUNT) / "MyDrive" / DRIVE_FOLDER / "runs" / profile)
    return str(Path("runs") / profile)


def load_kaggle_credentials() -> list[str]:
    """Copy Kaggle credentials from Colab secrets into this process's environment.

    Returns the names found (never the values). Variables already set win; nothing is
    written to disk, so the key does not end up in a saved notebook or on Drive.
    """
    found = [name for name in KAGGLE_SECRETS if os.environ.get(name)]
    if not in_colab():
        return found
    from google.colab import userdata

    for name in KAGGLE_SECRETS:
        if name in found:
            continue
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError / NotebookAccessError: the secret is optional
            continue
        if value:
            os.environ[name] = value
            found.append(name)
    return found


def download_dataset() -> Path:
    """Download the Kaggle dataset with kagglehub (to Drive in Colab, once) and return its folder."""
    try:
        import kagglehub
    except ImportError:
        raise ImportError(
            "kagglehub is needed to download the dataset: pip install 'seglib[colab]' "
            "(in a checkout: .venv/bin/pip install -e '.[colab]')"
        ) from None
    if in_colab():  # kagglehub's cache on Drive: a later runtime finds the files there
        os.environ.setdefault("KAGGLEHUB_CACHE", str(mount_drive() / DRIVE_FOLDER / "kaggle"))
    names = load_kaggle_credentials()
    print(f"Kaggle credentials from: {', '.join(names) if names else 'none (public download)'}")
    try:
        root = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as error:
        raise RuntimeError(
            f"the Kaggle download of {KAGGLE_DATASET} failed ({type(error).__name__}: {error}). Add KAGGLE_USERNAME "
            "and KAGGLE_KEY as Colab secrets (the key icon on the left; give this notebook access), or put the "
            f"dataset's '{KAGGLE_FOLDER}' folder on Drive and set DATA to it"
        ) from None
    folder = root / KAGGLE_FOLDER
    return folder if folder.is_dir() else root


def setup(out_dir: str | None = None, profile: str = "quick", data: str | None = None) -> tuple[str, str | None]:
    """The notebooks' set-up: the run folder and the data path to use.

    In Colab: say which GPU this runtime has (or how to get one), and mount Drive when the
    run folder is on it. ``data`` "kaggle" downloads the dataset (to Drive in Colab).
    """
    out_dir = run_folder(out_dir, profile)
    if in_colab():
        check_gpu()
        if out_dir.startswith(DRIVE_MOUNT) or (data or "").startswith(DRIVE_MOUNT):
            mount_drive()
    if data == KAGGLE_DATA:
        data = str(download_dataset())
    return out_dir, data


def main(argv: list[str] | None = None) -> int:
    """``python -m seglib.colab download``: the dataset's folder on stdout, everything else on stderr."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(
        prog="python -m seglib.colab", description=f"Download the Kaggle dataset {KAGGLE_DATASET} with kagglehub."
    )
    parser.add_argument("action", choices=["download"], help="download (once) and print the dataset's folder")
    parser.parse_args(argv)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            folder = download_dataset()
    except (ImportError, RuntimeError) as error:
        print(f"python -m seglib.colab: {error}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
