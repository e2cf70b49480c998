"""Google Colab set-up: install command, GPU check, Drive mount, Kaggle download.

Everything here is a no-op outside Colab except the explicit Kaggle download, so the
notebooks run unchanged under papermill on a plain machine. Kaggle credentials are read
from Colab secrets or environment variables into this process's environment only: they
are never written to disk, printed or logged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from seglib.system import gpu_name

# The project has no public remote yet: this placeholder is the one place to change.
REPOSITORY_URL = "https://github.com/YOUR-GITHUB-USER/seglib"
REPOSITORY_BRANCH = "main"
GIT_SOURCE = f"git+{REPOSITORY_URL}.git@{REPOSITORY_BRANCH}"
PATCHIFY_REQUIREMENT = "patchify==0.2.3"

KAGGLE_DATASET = "humansintheloop/semantic-segmentation-of-aerial-imagery"
KAGGLE_FOLDER = "Semantic segmentation dataset"
KAGGLE_DATA = "kaggle"  # the DATA parameter value that asks for a Kaggle download
KAGGLE_SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")
DRIVE_MOUNT = "/content/drive"


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
    """The pip commands that install seglib from ``source`` without downgrading numpy.

    patchify 0.2.3 declares ``numpy<2`` but works with numpy 2; installed normally it would
    downgrade numpy under Colab's running kernel, so it goes in separately with --no-deps.
    """
    return [
        f'pip install -q "seglib[colab] @ {source}"',
        f"pip install -q --no-deps {PATCHIFY_REQUIREMENT}",
    ]


def local_source(checkout: str | os.PathLike) -> str:
    """A pip direct-reference source for a local checkout (what tests install instead of git)."""
    return Path(checkout).resolve().as_uri()


def install_cell(source: str = GIT_SOURCE) -> str:
    """The notebooks' first code cell: in Colab only, run :func:`install_commands` verbatim.

    It cannot import seglib (seglib is what it installs), so the commands are spelled out;
    tests check that every notebook's cell equals this text and run it in a fresh venv.
    """
    commands = ",\n        ".join(repr(command) for command in install_commands(source))
    return (
        "# Colab only: install seglib, keeping Colab's numpy 2 (outside Colab this does nothing).\n"
        "import shlex, subprocess, sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    for command in [\n"
        f"        {commands},\n"
        "    ]:\n"
        '        subprocess.run([sys.executable, "-m", *shlex.split(command)], check=True)'
    )


def check_gpu() -> str | None:
    """Print which GPU this runtime has, or how to get one; return its name."""
    name = gpu_name()
    if name:
        print(f"GPU: {name}")
    else:
        print("No GPU found: training will be slow. In Colab: Runtime > Change runtime type > GPU.")
    return name


def mount_drive(mount_point: str = DRIVE_MOUNT) -> Path:
    """Mount Google Drive (Colab only), so data and experiments outlive the runtime."""
    from google.colab import drive  # only importable inside Colab

    drive.mount(mount_point)
    return Path(mount_point) / "MyDrive"


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
    """Download the Kaggle dataset with kagglehub (cached) and return its dataset folder."""
    try:
        import kagglehub
    except ImportError:
        raise ImportError("kagglehub is needed to download the dataset: pip install 'seglib[colab]'") from None
    names = load_kaggle_credentials()
    print(f"Kaggle credentials from: {', '.join(names) if names else 'none (public download)'}")
    root = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    folder = root / KAGGLE_FOLDER
    return folder if folder.is_dir() else root


def setup(data: str | None = None, mount: bool = False) -> str | None:
    """The notebooks' set-up: in Colab check the GPU and mount Drive; fetch Kaggle data if asked.

    Returns the data path to use: ``data`` unchanged, or the downloaded folder when ``data``
    is ``"kaggle"``. Outside Colab only that download can happen.
    """
    if in_colab():
        check_gpu()
        if mount:
            mount_drive()
    if data == KAGGLE_DATA:
        return str(download_dataset())
    return data
