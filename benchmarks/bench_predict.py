"""Whole-image prediction on this machine: seconds and peak memory per image, one process per case.

Each case runs ``seglib.predict.predict_file`` (read, predict, write the class map, overlay
and area shares) in a fresh Python process that reports its own peak resident memory (the
Keras backend, the model and the image included) as Linux's ``VmHWM``: ``ru_maxrss`` is
no use here, since Linux carries the parent's peak into a child across fork and exec.
The model is the full-size U-Net (256 px, 16 filters, depth 4) with random weights, saved
once; time and memory do not depend on the weights. Images are smooth synthetic colour
fields (JPEG, and a tiled GeoTIFF when rasterio is installed). The last line is:

    RESULT model=<m> backend=<b> cpus=<n> <case>_s=<f> <case>_rss_mb=<f> ...

Examples::

    python benchmarks/bench_predict.py                          # every case (~6 min on 2 idle cores)
    python benchmarks/bench_predict.py --cases 2000_blend 2000_tta
    python benchmarks/bench_predict.py --base-filters 8 --depth 3 --patch-size 128   # a small U-Net
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

# name: (image side in pixels, file format, mode, tta)
CASES = {
    "2000_blend": (2000, "jpeg", "blend", False),
    "2000_tta": (2000, "jpeg", "blend", True),
    "10000_blend": (10000, "jpeg", "blend", False),
    "10000_geotiff": (10000, "geotiff", "blend", False),
}
MAX_RSS_MB = 2048  # the bound for a 10,000 x 10,000 image
FEATURE_PIXELS = 40  # side of the synthetic image's colour blobs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work-dir", default=None, help="folder for the model and images (default: a temporary one)")
    parser.add_argument("--child", nargs=5, metavar=("MODEL", "IMAGE", "OUT", "MODE", "TTA"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (ru_maxrss where /proc is missing: an upper bound)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(model_path: str, image: str, out: str, mode: str, tta: str, batch_size: int) -> None:
    """One case in this fresh process: predict one file, print seconds and peak RSS as JSON."""
    from seglib.predict import predict_file
    from seglib.train import load_model

    model = load_model(model_path, compile=False)
    loaded_mb = peak_rss_mb()
    result = predict_file(model, image, out, mode=mode, tta=tta == "tta", batch_size=batch_size)
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": result["seconds"], "peak_rss_mb": peak_mb, "loaded_rss_mb": loaded_mb}))


def synthetic_image(side: int, seed: int = 0):
    """A smooth random colour field ``(side, side, 3)`` uint8: compresses like a photo, not like noise."""
    import numpy as np
    from PIL import Image

    blobs = np.random.default_rng(seed).integers(0, 256, (side // FEATURE_PIXELS + 1,) * 2 + (3,), dtype=np.uint8)
    return Image.fromarray(blobs).resize((side, side), Image.Resampling.BILINEAR)


def write_image(folder: Path, side: int, kind: str) -> Path:
    """The case's image file, written once."""
    path = folder / f"image_{side}.{'tif' if kind == 'geotiff' else 'jpg'}"
    if path.exists():
        return path
    image = synthetic_image(side)
    if kind == "jpeg":
        image.save(path, quality=90)
        return path
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side,
        height=side,
        count=3,
        dtype="uint8",
        crs="EPSG:32640",
        transform=from_origin(553_000, 2_787_000, 0.5, 0.5),
        tiled=True,
        compress="deflate",
    ) as dataset:
        dataset.write(np.asarray(image).transpose(2, 0, 1))
    return path


def write_model(folder: Path, args) -> Path:
    from seglib.model import build_unet

    path = folder / f"unet_{args.patch_size}_{args.base_filters}_{args.depth}.keras"
    if not path.exists():
        shape = (args.patch_size, args.patch_size, 3)
        build_unet(input_shape=shape, base_filters=args.base_filters, depth=args.depth, seed=0).save(path)
    return path


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def run_case(name: str, folder: Path, model: Path, args) -> dict:
    """One case in a fresh process: its seconds and peak RSS, and the load average before it."""
    side, kind, mode, tta = CASES[name]
    image = write_image(folder, side, kind)
    command = [
        sys.executable,
        __file__,
        "--child",
        str(model),
        str(image),
        str(folder / name),
        mode,
        "tta" if tta else "-",
        "--batch-size",
        str(args.batch_size),
    ]
    load = os.getloadavg()[0]  # other work on the machine slows the case down
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench_predict.py: case {name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load": load}


def run_cases(args, folder: Path) -> dict:
    import keras

    model = write_model(folder, args)
    label = f"unet{args.patch_size}-f{args.base_filters}-d{args.depth}"
    results = {}
    for name in args.cases:
        side, kind, mode, tta = CASES[name]
        if kind == "geotiff" and not has_rasterio():
            print(f"{name}: skipped (rasterio not installed)")
            continue
        case = results[name] = run_case(name, folder, model, args)
        bound = f" (bound {MAX_RSS_MB} MB)" if side >= 10000 else ""
        print(
            f"{name}: {side}x{side} {kind}, {mode}{'+tta' if tta else ''}, {label}: "
            f"{case['seconds']:.1f} s, peak RSS {case['peak_rss_mb']:,.0f} MB{bound} "
            f"(model loaded: {case['loaded_rss_mb']:,.0f} MB), load average {case['load']:.1f} at the start",
            flush=True,
        )
    fields = " ".join(
        f"{name}_s={case['seconds']:.1f} {name}_rss_mb={case['peak_rss_mb']:.0f}" for name, case in results.items()
    )
    print(f"RESULT model={label} backend={keras.backend.backend()} cpus={os.cpu_count()} {fields}")
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        run_child(*args.child, batch_size=args.batch_size)
        return {}
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        return run_cases(args, Path(args.work_dir))
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as folder:  # 10k images: ~100 MB each
        return run_cases(args, Path(folder))


if __name__ == "__main__":
    main()
