"""``seglib predict``: its options and the command.

The options are declared from ``seglib.predict.options`` alone, so ``--help`` and a usage
mistake are answered at once; numpy, Pillow and Keras are imported when the command runs.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from seglib.predict.options import DEFAULT_BATCH_SIZE, MODES

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}")
    return value


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a trained seglib model (.keras)")
    parser.add_argument("images", nargs="+", help="image files: JPEG, PNG, TIFF, GeoTIFF (with seglib[geo])")
    parser.add_argument("--out", required=True, help="folder for the class maps, overlays and area shares")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="blend",
        help="blend: overlapping windows, smoothly weighted (default); tiles: non-overlapping windows",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the 8 flips/rotations (8x the time); default: on iff the model was trained with "
        "augmentation (its MODEL.recipe.json says so)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"windows per model call (default {DEFAULT_BATCH_SIZE})",
    )


def cli(args: argparse.Namespace) -> int:
    """Segment every image; a failed image is reported and the others still run.

    Exit status 0: all written. 1: the model is unusable (no image is tried), some image
    failed (after all were tried), or the disk filled up (the images after it are not
    tried). 2 is argparse's, for a refused command line.
    """
    from seglib.data import DataError, check_model_file, trained_with_augmentation
    from seglib.predict.files import predict_file, summary_line
    from seglib.predict.tiling import patch_size_of
    from seglib.train import load_model

    try:
        model_path = check_model_file(args.model)
    except DataError as exc:
        print(f"seglib predict: {exc}", file=sys.stderr)
        return 1
    try:
        model = load_model(model_path, compile=False)
        patch_size_of(model)
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        print(f"seglib predict: cannot use model {args.model}: {exc}", file=sys.stderr)
        return 1
    tta = trained_with_augmentation(model_path) if args.tta is None else args.tta
    if tta and args.tta is None:
        print(
            f"seglib predict: {args.model} was trained with augmentation: averaging the 8 flips/rotations "
            "(--no-tta to skip)",
            file=sys.stderr,
        )
    failed = 0
    written: dict[str, str] = {}
    with _stops_counted() as stops:
        for index, image in enumerate(args.images):
            if stops():  # a stop TensorFlow's runtime swallowed: the images reported are done, the rest not
                raise KeyboardInterrupt
            stem = Path(image).stem
            try:
                if stem in written:
                    raise DataError(
                        f"cannot segment {image}: expected a name of its own in --out, found the same "
                        f"stem as {written[stem]} (its outputs would be overwritten); rename one"
                    )
                result = predict_file(
                    model,
                    image,
                    args.out,
                    mode=args.mode,
                    tta=tta,
                    batch_size=args.batch_size,
                    model_file=args.model,
                )
                written[stem] = image
            except DataError as exc:
                print(f"seglib predict: {exc}", file=sys.stderr)
                failed += 1
                continue
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                    print(
                        f"seglib predict: cannot write the outputs of {image} in {args.out}: {exc.strerror} "
                        f"({errno.errorcode[exc.errno]}); no partial file was left; free space or choose another "
                        f"--out, then run it again with the {len(args.images) - index} image(s) from {image} on",
                        file=sys.stderr,
                    )
                    return 1
                print(f"seglib predict: failed on {image}: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(summary_line(result), flush=True)
        if stops():
            raise KeyboardInterrupt
    if failed:
        print(f"seglib predict: {failed} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failed else 0


@contextmanager
def _stops_counted():
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt as usual, and are counted: one that lands
    inside TensorFlow's runtime can end in an exception it catches, and must still stop the command
    once the image in hand is written. Yields a function giving the count."""
    count = [0]
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield lambda: count[0]
        return
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def stop(signum, frame):
        count[0] += 1
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in handlers:
        signal.signal(signum, stop)
    try:
        yield lambda: count[0]
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
