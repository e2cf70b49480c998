"""Build the device kit: what the bare H200 machine lacks to run seglib's pipeline offline on JAX.

    .venv/bin/python benchmarks/device_kit.py --data DATA [--out .device-kit]   # make device-kit DATA=...
    .venv/bin/python benchmarks/device_kit.py --no-data                         # the embedded data only

The lent GPU machine has Python 3.12, JAX with CUDA and many packages, but no network and none
of Keras, Jupyter, papermill, jupytext or seglib. Everything it needs must travel with the
working tree, 64 MiB at most all together, so this script gathers only what is missing:

    OUT/wheels/           cp312 / py3 wheels: the REQUIREMENTS below and every requirement of
                          theirs that is not PREINSTALLED there, patchify (no deps), and seglib
                          itself, built from this checkout
    OUT/data/             a copy of the real dataset: --data, the Kaggle dataset's "Semantic
                          segmentation dataset" folder, or "kaggle" to download it first
    OUT/machine-needs.txt what the kit expects the machine to provide (preinstalled names with
                          the versions the kit's wheels ask for): the stand-ins a test installs
    OUT/install.sh        installs the kit offline into $PYTHON (default python3)
    OUT/MANIFEST.txt      every file's size, and how to use the kit

The set is resolved, not guessed: one ``pip download`` (binary wheels for CPython 3.12 on
manylinux x86_64) resolves the REQUIREMENTS with their dependencies, then a walk of each
wheel's Requires-Dist (markers evaluated for Python 3.12 on Linux) keeps what the
requirements reach without passing through a preinstalled package. The script prints the
kit's size, per part, and exits 1 if it is over LIMIT_MIB. The first run downloads for a
minute or more; pip's cache makes the next ones quick.

On the device: carry ``.device-kit`` and start the command with ``sh .device-kit/install.sh``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# What the kit holds. Pinned top-level requirements, checked to install together with numpy 2.5
# on Python 3.12 (their own dependencies are resolved by pip at build time and listed in
# MANIFEST.txt).
REQUIREMENTS = [
    "keras==3.15.1",
    "papermill==2.7.0",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    "jupyter-client==8.10.0",
    "jupytext==1.19.6",
    # BOHB's density model (Optuna's TPE); seglib imports it only for the bohb tuner, but
    # pip checks every declared requirement when seglib is installed.
    "optuna==5.1.0",
]
# Installed with --no-deps: patchify declares numpy<2 but works with numpy 2 (see pyproject.toml).
NO_DEPS = ["patchify==0.2.3"]
# seglib requirements the JAX pipeline does not use: never in the kit (TensorFlow alone is
# ~600 MB; NNI, installed apart, and the requirements seglib declares for it are replaced
# there by the in-process search engine).
NNI_REQUIREMENTS = {
    "astor",
    "json-tricks",
    "nvidia-ml-py",
    "prettytable",
    "pythonwebhdfs",
    "responses",
    "schema",
    "typeguard",
    "websockets",
}
EXCLUDED = {"tensorflow", "nni"} | NNI_REQUIREMENTS

# The GPU machine's Python packages, as its provider lists them ("Python packages already
# there", NVIDIA H200, image 'cuda', as read on 2026-11-17).
# Notable versions there: Python 3.12.3, numpy 2.5.2, jax/jaxlib 0.11.2 (CUDA 13 plugin).
PREINSTALLED = frozenset(
    canonicalize_name(n)
    for n in [
        "absl-py",
        "accelerate",
        "aiofiles",
        "aiohappyeyeballs",
        "aiohttp",
        "aiosignal",
        "annotated-doc",
        "anyio",
        "attrs",
        "botorch",
        "build",
        "certifi",
        "charset-normalizer",
        "chex",
        "click",
        "cloudpickle",
        "cmake",
        "colorama",
        "contourpy",
        "coverage",
        "cuda-bindings",
        "cuda-core",
        "cuda-pathfinder",
        "cuda-toolkit",
        "cupy-cuda13x",
        "cycler",
        "cython",
        "diffrax",
        "e3nn",
        "einops",
        "equinox",
        "etils",
        "execnet",
        "filelock",
        "flatbuffers",
        "flax",
        "fonttools",
        "formulaic",
        "frozenlist",
        "fsspec",
        "gpytorch",
        "grpcio",
        "h11",
        "h5py",
        "hf-xet",
        "httpcore",
        "httpx",
        "huggingface-hub",
        "humanize",
        "hypothesis",
        "idna",
        "imageio",
        "iniconfig",
        "interface-meta",
        "jax",
        "jax-cuda13-pjrt",
        "jax-cuda13-plugin",
        "jaxlib",
        "jaxtyping",
        "jinja2",
        "joblib",
        "kiwisolver",
        "lazy-loader",
        "lightning",
        "lightning-utilities",
        "linear-operator",
        "lineax",
        "llvmlite",
        "lxml",
        "markdown",
        "markdown-it-py",
        "markupsafe",
        "matplotlib",
        "mdurl",
        "meson",
        "ml-dtypes",
        "mpi4py",
        "mpmath",
        "msgpack",
        "multidict",
        "multipledispatch",
        "mypy-extensions",
        "nanobind",
        "narwhals",
        "networkx",
        "ninja",
        "numba",
        "numba-cuda",
        "numpy",
        "numpyro",
        "nvidia-cublas",
        "nvidia-cuda-cupti",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-runtime",
        "nvidia-cudnn-cu13",
        "nvidia-cufft",
        "nvidia-cufile",
        "nvidia-curand",
        "nvidia-cusolver",
        "nvidia-cusparse",
        "nvidia-cusparselt-cu13",
        "nvidia-ml-py",
        "nvidia-nccl-cu13",
        "nvidia-nvjitlink",
        "nvidia-nvshmem-cu13",
        "nvidia-nvtx",
        "onnx",
        "onnx-ir",
        "onnxruntime",
        "onnxscript",
        "opencv-python-headless",
        "optax",
        "opt-einsum",
        "opt-einsum-fx",
        "optimistix",
        "orbax-checkpoint",
        "packaging",
        "pandas",
        "pathspec",
        "patsy",
        "peft",
        "pillow",
        "pip",
        "pluggy",
        "portalocker",
        "prometheus-client",
        "propcache",
        "protobuf",
        "psutil",
        "pyarrow",
        "pybind11",
        "py-cpuinfo",
        "pygments",
        "pyparsing",
        "pyproject-hooks",
        "pyre-extensions",
        "pytest",
        "pytest-benchmark",
        "pytest-cov",
        "pytest-mock",
        "pytest-timeout",
        "pytest-xdist",
        "python-dateutil",
        "pytorch-lightning",
        "pyyaml",
        "regex",
        "requests",
        "rich",
        "sacrebleu",
        "safetensors",
        "scikit-build-core",
        "scikit-image",
        "scikit-learn",
        "scipy",
        "seaborn",
        "sentencepiece",
        "sentence-transformers",
        "setuptools",
        "shellingham",
        "simplejson",
        "six",
        "sortedcontainers",
        "statsmodels",
        "sympy",
        "tabulate",
        "tensorboard",
        "tensorboard-data-server",
        "tensorstore",
        "threadpoolctl",
        "tifffile",
        "tiktoken",
        "timm",
        "tokenizers",
        "toolz",
        "torch",
        "torchaudio",
        "torchdiffeq",
        "torch-geometric",
        "torchmetrics",
        "torchvision",
        "tqdm",
        "transformers",
        "treescope",
        "triton",
        "typer",
        "typing-extensions",
        "typing-inspect",
        "urllib3",
        "uvloop",
        "wadler-lindig",
        "werkzeug",
        "wheel",
        "wrapt",
        "xarray",
        "xxhash",
        "yarl",
        "zipp",
    ]
)

# The device takes at most 64 MiB of working tree plus carried folders; the checkout is ~1.5 MiB.
LIMIT_MIB = 60
# The device's interpreter, for wheel tags and for evaluating environment markers.
PYTHON_VERSION = "3.12"
TARGET_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
# pip matches manylinux_2_N tags exactly, so name every N the device's glibc (2.39) can load.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
# ---------------------------------------------------------------------------------------------

MIB = 1024 * 1024


def pip(*args: str) -> None:
    """Run this interpreter's pip, its output kept back (this machine's pip config can be chatty)
    and printed only when it fails."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"device_kit.py: pip {args[0]} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def download(requirements: list[str], dest: Path, *, deps: bool) -> None:
    """Binary wheels for CPython 3.12 on manylinux x86_64, whatever interpreter runs this."""
    platform_flags = [flag for p in PLATFORMS for flag in ("--platform", p)]
    pip(
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        *platform_flags,
        *([] if deps else ["--no-deps"]),
        "-d",
        str(dest),
        *requirements,
    )


def build_seglib(dest: Path, scratch: Path) -> Path:
    """seglib's wheel, built from a copy of the checkout (tracked and untracked-not-ignored files).

    pip builds a local project in place; building a copy keeps build/ out of the checkout.
    """
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    source = scratch / "seglib-source"
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip("wheel", "-q", "--no-deps", "-w", str(dest), str(source))
    wheels = list(dest.glob("seglib-*.whl"))
    if len(wheels) != 1:
        sys.exit(
            f"device_kit.py: expected one seglib-*.whl in {dest} after pip wheel, found {[w.name for w in wheels]}"
        )
    return wheels[0]


def requires(wheel: Path) -> list[Requirement]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds on the device's Python 3.12 on Linux with these extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET_MARKERS, "extra": extra}) for extra in {"", *extras})


def resolve(
    wheels: dict[str, Path], roots: list[Requirement]
) -> tuple[dict[str, Path], dict[str, SpecifierSet], list[str]]:
    """The wheels reached from roots without passing through a preinstalled package.

    Returns (kit wheels by name, what the kit asks of preinstalled packages, notes saying who
    asked for each of those).
    """
    kit: dict[str, Path] = {}
    needs: dict[str, SpecifierSet] = {}
    notes: list[str] = []
    queue = [(root, "REQUIREMENTS") for root in roots]
    seen_extras: dict[str, set[str]] = {}
    while queue:
        requirement, wanted_by = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if name in PREINSTALLED:
            needs[name] = needs.get(name, SpecifierSet()) & requirement.specifier
            notes.append(f"{name}{requirement.specifier or ''} <- {wanted_by}")
            continue
        if name in EXCLUDED:
            sys.exit(f"device_kit.py: {name} is wanted by {wanted_by} but is in EXCLUDED; the JAX kit must not need it")
        if name not in wheels:
            sys.exit(
                f"device_kit.py: {name} is wanted by {wanted_by} on Python {PYTHON_VERSION}, but pip did not "
                f"download it (it may have judged the marker for this interpreter, Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}):"
                f" rerun benchmarks/device_kit.py with Python {PYTHON_VERSION}"
            )
        extras = set(requirement.extras)
        if name in seen_extras and extras <= seen_extras[name]:
            continue
        seen_extras.setdefault(name, set()).update(extras)
        kit[name] = wheels[name]
        for dependency in requires(wheels[name]):
            if applies(dependency, seen_extras[name]):
                queue.append((dependency, name))
    return kit, needs, notes


def check_data(source: Path) -> None:
    """Stop before any work unless source looks like the Kaggle dataset folder."""
    tiles = sorted(source.glob("Tile */images"))
    if not tiles or not all((t.parent / "masks").is_dir() for t in tiles):
        sys.exit(
            f"device_kit.py: {source} is not the dataset: expected 'Tile N/images' and 'Tile N/masks' "
            "folders in it (--data PATH)"
        )


def copy_data(source: Path, dest: Path) -> None:
    """Copy the dataset folder (and the README beside it, which holds its licence and facts)."""
    shutil.copytree(source, dest / source.name)
    if (source.parent / "README.md").is_file():
        shutil.copy2(source.parent / "README.md", dest / "README.md")


def size(path: Path) -> int:
    """Bytes in the files under path (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def install_script() -> str:
    """install.sh: the kit's wheels into $PYTHON's environment, with pip kept off any index."""
    names = " ".join(REQUIREMENTS)
    return f"""#!/bin/sh
# Written by benchmarks/device_kit.py. Installs the kit offline into $PYTHON (default python3),
# whose environment must already hold what machine-needs.txt lists (the H200 has it).
# Pip's configuration files and index variables are ignored: only the kit's wheels are used.
set -e
KIT=$(cd "$(dirname "$0")" && pwd)
PY=${{PYTHON:-python3}}
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_REQUIREMENT
"$PY" -m pip install -q --no-index --no-cache-dir --find-links "$KIT/wheels" {names}
# seglib with --no-deps: its own metadata still names tensorflow and nni, which the JAX run does not use.
"$PY" -m pip install -q --no-index --no-cache-dir --no-deps "$KIT"/wheels/patchify-*.whl "$KIT"/wheels/seglib-*.whl
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".device-kit", help="the kit's folder (default: .device-kit)"
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data", help="the Kaggle dataset's 'Semantic segmentation dataset' folder, or 'kaggle' to download it"
    )
    data.add_argument("--no-data", action="store_true", help="leave the dataset out (the run uses the embedded one)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    if args.data == "kaggle":
        from seglib.colab import download_dataset

        args.data = download_dataset()
    if not args.no_data:
        args.data = Path(args.data)
        check_data(args.data.resolve())

    # Start from nothing, but never wipe a folder that is not a kit (say, a mistyped --out).
    if out.exists() and any(out.iterdir()) and not (out / "MANIFEST.txt").is_file():
        sys.exit(
            f"device_kit.py: {out} is not empty and holds no MANIFEST.txt, so it is not a kit: refusing to overwrite it"
        )
    shutil.rmtree(out, ignore_errors=True)
    (out / "wheels").mkdir(parents=True)
    (out / "MANIFEST.txt").write_text("# incomplete: benchmarks/device_kit.py stopped before it finished this kit\n")

    with tempfile.TemporaryDirectory(prefix="device-kit-") as scratch_name:
        scratch = Path(scratch_name)
        print(
            f"pip download {' '.join(REQUIREMENTS)} (+ dependencies, cp312 manylinux; first run can take minutes)",
            flush=True,
        )
        download(REQUIREMENTS, scratch / "resolved", deps=True)
        download(NO_DEPS, scratch / "no-deps", deps=False)
        seglib_wheel = build_seglib(scratch / "seglib", scratch)

        wheels = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in (scratch / "resolved").glob("*.whl")}
        kit, needs, notes = resolve(wheels, [Requirement(r) for r in REQUIREMENTS])
        for requirement in requires(seglib_wheel):
            name = canonicalize_name(requirement.name)
            if not applies(requirement, set()) or name in EXCLUDED:
                continue
            if name in PREINSTALLED:
                needs[name] = needs.get(name, SpecifierSet()) & requirement.specifier
                notes.append(f"{name}{requirement.specifier or ''} <- seglib")
            elif name not in kit:
                sys.exit(
                    f"device_kit.py: seglib requires {requirement}, which is neither preinstalled on the H200 "
                    f"nor reached from REQUIREMENTS: add it to REQUIREMENTS (or EXCLUDED) in benchmarks/device_kit.py"
                )
        for wheel in [*kit.values(), *(scratch / "no-deps").glob("*.whl"), seglib_wheel]:
            shutil.copy2(wheel, out / "wheels" / wheel.name)

    if not args.no_data:
        (out / "data").mkdir()
        copy_data(args.data.resolve(), out / "data")
    (out / "machine-needs.txt").write_text(
        "# What the kit asks of packages the H200 already has (written by benchmarks/device_kit.py).\n"
        + "".join(f"{name}{needs[name]}\n" for name in sorted(needs))
    )
    (out / "install.sh").write_text(install_script())

    wheel_files = sorted((out / "wheels").iterdir(), key=lambda p: p.name.lower())
    parts = {"wheels": size(out / "wheels"), "data": size(out / "data")}
    lines = [f"{f.stat().st_size / MIB:8.2f} MiB  wheels/{f.name}" for f in wheel_files]
    lines.append("")
    lines += [
        f"{parts[p] / MIB:8.2f} MiB  {p}" + (" (left out: --no-data)" if p == "data" and args.no_data else "")
        for p in parts
    ]
    total = size(out)  # MANIFEST.txt counted as its placeholder (a few KiB less than the final)
    lines.append(f"{total / MIB:8.2f} MiB  total ({len(wheel_files)} wheels; limit {LIMIT_MIB} MiB)")
    manifest = "\n".join(
        [
            "# The device kit (benchmarks/device_kit.py). On the H200: carry this folder, then, e.g.",
            f"#   sh {out.name}/install.sh && KERAS_BACKEND=jax seglib run --notebooks notebooks --out $OUT/run \\",
            f"#       --data '{out.name}/data/{args.data.name}'"
            if not args.no_data
            else "#       --data DATASET_FOLDER  (this kit was built with --no-data: carry the dataset too)",
            "# (seglib is installed as a wheel, not editable: --notebooks names the checkout's folder)",
            "",
            *lines,
            "",
            "# Asked of the machine's preinstalled packages:",
            *sorted(set(notes)),
            "",
        ]
    )
    (out / "MANIFEST.txt").write_text(manifest)
    print("\n".join(lines))
    print(f"written to {out}")
    if total > LIMIT_MIB * MIB:
        print(
            f"device_kit.py: the kit in {out} is {total / MIB:.2f} MiB, over the {LIMIT_MIB} MiB limit", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
