"""seglib.predict on small images with tiny models whose answers are known.

``known_model`` is a 1x1 convolution that names the class of a pixel from its scaled
colour, one class per pure colour (red, green, blue, yellow, cyan, magenta). ``pattern``
lays those colours out so that every window holds each channel at 0 and at 255, so
per-window min-max scaling maps them exactly to 0 and 1 wherever the window falls: the
right mask is then known for any padding, blending and flipping.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

from seglib.cli import main
from seglib.data import CLASS_NAMES, NUM_CLASSES, PALETTE, scale_patches, write_recipe
from seglib.model import build_unet
from seglib.predict import (
    DIHEDRAL,
    figure_arrays,
    predict_image,
    predict_probabilities,
    predict_strips,
    score_whole_images,
)
from seglib.predict.files import publish_together
from seglib.predict.tiling import _reflect, _turned, _unturned

PATCH = 32
COLOURS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)], dtype=np.float32)
SHARPNESS = 20.0  # logit scale: the right class gets a probability above 0.9999
PALETTE_RGB = np.array(list(PALETTE.values()), dtype=np.uint8)


def known_model(patch: int = PATCH, num_classes: int = NUM_CLASSES, channels: int = 3) -> keras.Model:
    """Softmax of a matched filter: class k's logit is highest for colour k (margins >= 0.5)."""
    inputs = keras.Input((patch, patch, channels))
    outputs = layers.Conv2D(num_classes, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    colours = np.resize(COLOURS, (num_classes, 3))
    kernel = np.zeros((1, 1, channels, num_classes), dtype=np.float32)
    kernel[0, 0, :3] = (2 * colours - 1).T * SHARPNESS
    bias = -(colours.sum(1) - 1) / 2 * SHARPNESS
    model.layers[-1].set_weights([kernel, bias.astype(np.float32)])
    return model


def constant_model(probabilities, patch: int = PATCH) -> keras.Model:
    """The same probabilities at every pixel, whatever the image."""
    inputs = keras.Input((patch, patch, 3))
    outputs = layers.Conv2D(NUM_CLASSES, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, NUM_CLASSES), dtype=np.float32)
    model.layers[-1].set_weights([kernel, np.log(np.asarray(probabilities, dtype=np.float32))])
    return model


def pattern(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of the six pure colours and its classes; not symmetric under any turn."""
    rows, cols = np.mgrid[:height, :width]
    classes = ((rows // 2 + 2 * (cols // 3)) % NUM_CLASSES).astype(np.uint8)
    return (COLOURS[classes] * 255).astype(np.uint8), classes


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "known.keras"
    known_model().save(path)
    return path


def run_cli(model, images, out, *options) -> int:
    return main(["predict", str(model), *map(str, images), "--out", str(out), *options])


def read_classes(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------------------------------------
# The functional core


@pytest.mark.parametrize("size", [(5, 7), (32, 32), (37, 53), (70, 45), (100, 130)])
@pytest.mark.parametrize("mode", ["tiles", "blend"])
@pytest.mark.parametrize("tta", [False, True])
def test_known_classes_through_padding_blending_and_turns(size, mode, tta):
    image, truth = pattern(*size)
    probs = predict_probabilities(known_model(), image, mode=mode, tta=tta, batch_size=3)
    assert probs.shape == (*size, NUM_CLASSES) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs.argmax(-1), truth)
    # Every window and every turn agrees: one wrongly undone turn in 8 would leave 7/8.
    assert np.take_along_axis(probs, truth[..., None], -1).min() > 0.999
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)


def test_tiles_on_whole_patches_are_the_models_own_predictions():
    """Training's cut: non-overlapping patches from the top-left, each scaled on its own."""
    model = build_unet(input_shape=(PATCH, PATCH, 3), base_filters=4, depth=2, seed=0)
    image = np.random.default_rng(0).integers(0, 256, (2 * PATCH, 3 * PATCH, 3), dtype=np.uint8)
    patches = image.reshape(2, PATCH, 3, PATCH, 3).transpose(0, 2, 1, 3, 4).reshape(-1, PATCH, PATCH, 3)
    expected = model.predict(scale_patches(patches), verbose=0)
    expected = expected.reshape(2, 3, PATCH, PATCH, NUM_CLASSES).transpose(0, 2, 1, 3, 4)
    expected = expected.reshape(2 * PATCH, 3 * PATCH, NUM_CLASSES)
    probs = predict_probabilities(model, image, mode="tiles", batch_size=4)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(predict_image(model, image, mode="tiles"), expected.argmax(-1))


@pytest.mark.parametrize("mode", ["tiles", "blend"])
def test_constant_class_image_gives_a_constant_mask_without_seams(mode):
    wanted = np.array([0.05, 0.1, 0.15, 0.4, 0.2, 0.1], dtype=np.float32)
    image = np.full((90, 75, 3), PALETTE_RGB[3], dtype=np.uint8)
    probs = predict_probabilities(constant_model(wanted), image, mode=mode, tta=True)
    np.testing.assert_allclose(probs, np.broadcast_to(wanted, probs.shape), atol=1e-5)
    assert (probs.argmax(-1) == 3).all()


def test_strips_read_and_hold_one_band_of_rows():
    image, truth = pattern(150, 40)
    asked = []

    def read_rows(start, stop):
        asked.append(stop - start)
        return image[start:stop]

    strips = list(predict_strips(known_model(), read_rows, 150, 40, mode="blend"))
    assert max(asked) <= PATCH
    assert [first for first, _ in strips] == list(np.cumsum([0] + [len(p) for _, p in strips[:-1]]))
    assert max(len(probs) for _, probs in strips) <= PATCH
    np.testing.assert_array_equal(np.concatenate([p for _, p in strips]).argmax(-1), truth)


def test_the_eight_turns_are_distinct_and_undone():
    windows = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    turned = [_turned(windows, turns, flip) for turns, flip in DIHEDRAL]
    assert len({t.tobytes() for t in turned}) == 8
    for (turns, flip), t in zip(DIHEDRAL, turned):
        np.testing.assert_array_equal(_unturned(t, turns, flip), windows)


@pytest.mark.parametrize("length", [1, 2, 5, 32])
def test_padding_mirrors_as_numpy_reflect_even_far_beyond_the_image(length):
    values = np.arange(length)
    pad = 3 * length + 40
    expected = np.pad(values, pad, mode="reflect")
    np.testing.assert_array_equal(values[_reflect(np.arange(-pad, length + pad), length)], expected)


def test_16_bit_array_gives_the_8_bit_answer():
    image, truth = pattern(40, 50)
    np.testing.assert_array_equal(predict_image(known_model(), image.astype(np.uint16) * 257), truth)


# ---------------------------------------------------------------------------------------------
# Files and the command line


def test_cli_writes_palette_png_overlay_and_area_shares(tmp_path, model_file, capsys):
    image, truth = pattern(45, 70)
    Image.fromarray(image).save(tmp_path / "scene.png")
    assert run_cli(model_file, [tmp_path / "scene.png"], tmp_path / "out", "--tta", "--batch-size", "2") == 0
    written = Image.open(tmp_path / "out" / "scene_classes.png")
    assert written.mode == "P"
    assert written.getpalette()[: 3 * NUM_CLASSES] == PALETTE_RGB.ravel().tolist()
    np.testing.assert_array_equal(np.asarray(written), truth)
    overlay = Image.open(tmp_path / "out" / "scene_overlay.jpg")
    assert overlay.size == (70, 45) and overlay.mode == "RGB"
    areas = json.loads((tmp_path / "out" / "scene_areas.json").read_text())
    counts = np.bincount(truth.ravel(), minlength=NUM_CLASSES)
    assert [areas["classes"][name]["pixels"] for name in CLASS_NAMES] == counts.tolist()
    assert sum(c["share"] for c in areas["classes"].values()) == pytest.approx(1)
    assert areas["settings"]["mode"] == "blend" and areas["settings"]["tta"] is True
    assert areas["settings"]["patch_size"] == PATCH and areas["seconds"] > 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'scene.png'}: 70x45 -> ") and "(blend+tta, " in line


def test_tta_is_on_by_default_for_a_model_trained_with_augmentation(tmp_path, model_file):
    """The recipe recorded beside the model decides the default; --tta / --no-tta override it."""
    image, _ = pattern(20, 20)
    Image.fromarray(image).save(tmp_path / "scene.png")
    model = tmp_path / "known.keras"
    model.write_bytes(model_file.read_bytes())

    def tta_used(*options) -> bool:
        assert run_cli(model, [tmp_path / "scene.png"], tmp_path / "out", *options) == 0
        return json.loads((tmp_path / "out" / "scene_areas.json").read_text())["settings"]["tta"]

    assert tta_used() is False  # no recipe: the original's default
    write_recipe(model, {"augment": "d4", "lr_schedule": "cosine"})
    assert (tmp_path / "known.recipe.json").is_file()
    assert tta_used() is True
    assert tta_used("--no-tta") is False
    write_recipe(model, {"augment": "none"})
    assert tta_used() is False and tta_used("--tta") is True


def test_large_image_gets_a_subsampled_overlay_and_a_full_class_map(tmp_path, model_file, monkeypatch):
    monkeypatch.setattr("seglib.predict.images.OVERLAY_MAX_PIXELS", 1000)
    image, truth = pattern(60, 70)
    Image.fromarray(image).save(tmp_path / "big.png")
    assert run_cli(model_file, [tmp_path / "big.png"], tmp_path / "out") == 0
    assert Image.open(tmp_path / "out" / "big_overlay.jpg").size == (24, 20)  # one pixel in 3
    np.testing.assert_array_equal(read_classes(tmp_path / "out" / "big_classes.png"), truth)
    notes = json.loads((tmp_path / "out" / "big_areas.json").read_text())["notes"]
    assert notes == ["overlay subsampled: one pixel in 3 along each side (at most 1,000)"]


def write_png16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def write_bad_and_good_inputs(folder: Path) -> tuple[list[Path], dict[str, str], dict[str, np.ndarray]]:
    """Images for one call: bad ones with the words their error must hold, good ones with classes."""
    folder.mkdir()
    image, truth = pattern(40, 50)
    good = {"good.png": truth, "rgba.png": truth, "tiny.png": truth[:9, :11], "rgb48.png": truth}
    Image.fromarray(image).save(folder / "good.png")
    Image.fromarray(image).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(image[:9, :11]).save(folder / "tiny.png")
    write_png16(folder / "rgb48.png", image.astype(np.uint16) * 257)
    (folder / "notes.jpg").write_text("not an image at all\n")
    Image.fromarray(image).save(folder / "truncated.png")
    whole = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(image[..., 0]).save(folder / "grey.png")
    Image.fromarray(image[..., 0]).convert("LA").save(folder / "grey_alpha.png")
    Image.fromarray(image[..., 0].astype(np.uint16) * 257).save(folder / "grey16.png")
    bad = {
        "notes.jpg": "expected an image",
        "truncated.png": "expected a complete image",
        "grey.png": "found a 1-channel greyscale image",
        "grey_alpha.png": "found a 2-channel greyscale with alpha image",
        "grey16.png": "found a 1-channel 16-bit greyscale image",
    }
    order = [
        "good.png",
        "notes.jpg",
        "rgba.png",
        "truncated.png",
        "grey.png",
        "tiny.png",
        "grey_alpha.png",
        "grey16.png",
        "rgb48.png",
    ]
    return [folder / name for name in order], bad, good


def test_bad_inputs_are_named_and_the_other_images_still_run(tmp_path, model_file, capsys):
    images, bad, good = write_bad_and_good_inputs(tmp_path / "in")
    assert run_cli(model_file, images, tmp_path / "out") == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    for name, words in bad.items():
        (line,) = [e for e in errors if name in e]
        assert words in line and "expected" in line
    assert f"{len(bad)} of {len(images)} images failed" in captured.err
    for name, truth in good.items():
        stem = Path(name).stem
        np.testing.assert_array_equal(read_classes(tmp_path / "out" / f"{stem}_classes.png"), truth)
    notes = {
        name: json.loads((tmp_path / "out" / f"{Path(name).stem}_areas.json").read_text())["notes"] for name in good
    }
    assert any("alpha channel dropped" in n for n in notes["rgba.png"])
    assert any("reflect-padded" in n for n in notes["tiny.png"])
    assert any("16-bit" in n for n in notes["rgb48.png"])
    assert notes["good.png"] == []


SMALL_DISK = "64k"  # holds a small image's outputs and a grainy image's class map (1 kB), not its overlay (150 kB)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB tmpfs (mounting needs root; skipped elsewhere), unmounted afterwards."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_leaves_no_empty_or_partial_file_and_stops(tmp_path, model_file, small_disk, capsys):
    image, truth = pattern(20, 30)
    grainy = pattern(400, 400)[0] + np.random.default_rng(0).integers(-30, 31, (400, 400, 3))
    for name, pixels in (
        ("small.png", image),
        ("grainy.png", grainy.clip(0, 255).astype(np.uint8)),
        ("after.png", image),
    ):
        Image.fromarray(pixels).save(tmp_path / name)
    names = ["small.png", "grainy.png", "after.png"]
    assert run_cli(model_file, [tmp_path / n for n in names], small_disk) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"seglib predict: cannot write the outputs of {tmp_path / 'grainy.png'} in {small_disk}: ")
    assert "(ENOSPC)" in line and "no partial file" in line and f"2 image(s) from {tmp_path / 'grainy.png'}" in line
    assert sorted(p.name for p in small_disk.iterdir()) == [
        "small_areas.json",
        "small_classes.png",
        "small_overlay.jpg",
    ]
    np.testing.assert_array_equal(read_classes(small_disk / "small_classes.png"), truth)
    assert json.loads((small_disk / "small_areas.json").read_text())["width"] == 30


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_an_images_outputs_appear_together_or_not_at_all(tmp_path, stop):
    """A stop while writing the second file leaves the earlier run's three files as they were."""
    paths = [tmp_path / name for name in ("scene_classes.png", "scene_overlay.jpg", "scene_areas.json")]
    for path in paths:
        path.write_text("earlier run")

    def half_written(temporary: Path) -> None:
        temporary.write_text("half")
        raise stop

    writers = dict(zip(paths, [lambda t: t.write_text("new"), half_written, lambda t: t.write_text("new")]))
    with pytest.raises(type(stop)):
        publish_together(writers)
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    assert [path.read_text() for path in paths] == ["earlier run"] * 3


def test_ctrl_c_says_which_images_are_complete(tmp_path, model_file):
    """Interrupted while the second image is predicted: the first's files stay, the second has none."""
    small, _ = pattern(20, 30)
    large, _ = pattern(1500, 1500)  # minutes with --tta: still running when the signal comes
    Image.fromarray(small).save(tmp_path / "small.png")
    Image.fromarray(large).save(tmp_path / "large.png")
    command = [sys.executable, "-m", "seglib.cli", "predict", str(model_file), "--out", str(tmp_path / "out"), "--tta"]
    process = subprocess.Popen(
        [*command, str(tmp_path / "small.png"), str(tmp_path / "large.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()  # the small image's summary: it is written
        assert first.startswith(str(tmp_path / "small.png")), process.communicate(timeout=60)[1][-3000:]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    # TensorFlow's runtime can swallow the signal mid-image: that image is then finished, reported
    # and kept, and the command still stops. Either way the files are exactly the reported images'.
    reported = [name for name in ("small", "large") if str(tmp_path / f"{name}.png") in first + out]
    assert err.strip().splitlines()[-1] == (
        "seglib predict: interrupted; the images reported above are complete and no partial file was left; "
        "run it again with the images not reported"
    )
    assert "continue" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{name}_{kind}" for name in sorted(reported) for kind in ("areas.json", "classes.png", "overlay.jpg")
    ]


def test_same_stem_twice_is_refused_rather_than_overwritten(tmp_path, model_file, capsys):
    image, _ = pattern(20, 20)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(image).save(tmp_path / folder / "scene.png")
    assert run_cli(model_file, [tmp_path / "a/scene.png", tmp_path / "b/scene.png"], tmp_path / "out") == 1
    assert "same stem" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make_model, found",
    [
        (lambda: known_model(num_classes=5), "expected output (batch, 32, 32, 6)"),
        (lambda: known_model(channels=4), "expected one input of shape (batch, P, P, 3)"),
        (
            lambda: keras.Sequential([keras.Input((32, 16, 3)), layers.Conv2D(6, 1, activation="softmax")]),
            "expected one input of shape (batch, P, P, 3)",
        ),
    ],
    ids=["five-classes", "four-channels", "not-square"],
)
def test_model_that_does_not_fit_the_palette_is_refused(tmp_path, make_model, found, capsys):
    path = tmp_path / "model.keras"
    make_model().save(path)
    image, _ = pattern(20, 20)
    Image.fromarray(image).save(tmp_path / "scene.png")
    assert run_cli(path, [tmp_path / "scene.png"], tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert f"cannot use model {path}" in error and found in error
    assert not (tmp_path / "out").exists()


def damaged(whole: bytes, kind: str) -> bytes | None:
    """A saved model's bytes damaged as a disk, a copy or a download damages them (None: no file)."""
    at = len(whole) // 3  # inside the weights, the archive's largest member
    return {
        "truncated": whole[: len(whole) // 2],
        "empty": b"",
        "text": b"<html>404 Not Found</html>\n",
        "flipped": whole[:at] + bytes(b ^ 0xFF for b in whole[at : at + 4]) + whole[at + 4 :],
    }.get(kind)


@pytest.mark.parametrize(
    "kind, found, hint",
    [
        ("truncated", "truncated zip", "retrain it or restore the file"),
        ("empty", "empty file (0 bytes)", "retrain it or restore the file"),
        ("text", "not a Keras archive", "retrain it or restore the file"),
        ("flipped", "damaged zip (model.weights.h5 fails its CRC check)", "retrain it or restore the file"),
        ("missing", "no such file", "check the path"),
    ],
)
def test_damaged_model_file_is_named_with_what_is_wrong(tmp_path, model_file, kind, found, hint, capsys):
    path = tmp_path / "model.keras"
    content = damaged(model_file.read_bytes(), kind)
    if content is not None:
        path.write_bytes(content)
    image, _ = pattern(20, 20)
    Image.fromarray(image).save(tmp_path / "scene.png")
    assert run_cli(path, [tmp_path / "scene.png"], tmp_path / "out") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"seglib predict: cannot read model {path}: ") and line.endswith(f"; {hint}"), line
    assert found in line, line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# GeoTIFF


def write_geotiff(path: Path, image: np.ndarray, bands: int = 3):
    """``image`` as a tiled GeoTIFF in UTM zone 40N, with opaque extra bands up to ``bands``."""
    rasterio = pytest.importorskip("rasterio", reason="the geo extra (rasterio) is not installed")
    from rasterio.transform import from_origin

    transform = from_origin(553_000.0, 2_787_000.0, 0.5, 0.5)
    data = np.concatenate([image, np.full((*image.shape[:2], max(bands - 3, 0)), 255, image.dtype)], -1)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=image.shape[1],
        height=image.shape[0],
        count=bands,
        dtype=image.dtype.name,
        crs="EPSG:32640",
        transform=transform,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dataset:
        dataset.write(data.transpose(2, 0, 1))
    return rasterio, transform


@pytest.mark.parametrize("bits, bands", [(8, 3), (16, 3), (8, 4)])
def test_geotiff_mask_keeps_crs_transform_and_palette(tmp_path, model_file, bits, bands):
    image, truth = pattern(70, 45)
    image = image if bits == 8 else image.astype(np.uint16) * 257
    rasterio, transform = write_geotiff(tmp_path / "scene.tif", image, bands)
    assert run_cli(model_file, [tmp_path / "scene.tif"], tmp_path / "out") == 0
    with rasterio.open(tmp_path / "out" / "scene_classes.tif") as mask:
        assert mask.crs.to_epsg() == 32640 and mask.transform == transform
        assert (mask.count, mask.dtypes[0]) == (1, "uint8")
        colormap = mask.colormap(1)
        assert [colormap[i][:3] for i in range(NUM_CLASSES)] == [tuple(c) for c in PALETTE_RGB.tolist()]
        np.testing.assert_array_equal(mask.read(1), truth)
    notes = json.loads((tmp_path / "out" / "scene_areas.json").read_text())["notes"]
    assert any("16-bit bands used at full precision" in n for n in notes) == (bits == 16)
    assert any("bands 4-4" in n for n in notes) == (bands == 4)


def test_bad_geotiffs_are_named_and_the_good_one_still_runs(tmp_path, model_file, capsys):
    image, truth = pattern(40, 30)
    write_geotiff(tmp_path / "good.tif", image)
    write_geotiff(tmp_path / "one_band.tif", image[..., :1], bands=1)
    write_geotiff(tmp_path / "float.tif", image.astype(np.float32))
    write_geotiff(tmp_path / "whole.tif", np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    whole = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    names = ["one_band.tif", "good.tif", "float.tif", "truncated.tif"]
    assert run_cli(model_file, [tmp_path / n for n in names], tmp_path / "out") == 1
    errors = capsys.readouterr().err
    assert "one_band.tif: expected a colour image with 3 bands (RGB), found 1 band(s)" in errors
    assert "float.tif: expected bands of uint8 or uint16, found float32" in errors
    assert "cannot decode " + str(tmp_path / "truncated.tif") + ": expected a complete image" in errors
    np.testing.assert_array_equal(read_classes(tmp_path / "out" / "good_classes.tif"), truth)


def test_georeferenced_tiff_without_rasterio_says_how_to_get_the_extra(tmp_path, model_file, monkeypatch, capsys):
    monkeypatch.setattr("seglib.predict.images._rasterio", lambda: None)
    image, truth = pattern(30, 40)
    tiepoint = (0.0, 0.0, 0.0, 553_000.0, 2_787_000.0, 0.0)
    Image.fromarray(image).save(tmp_path / "geo.tif", tiffinfo={33550: (0.5, 0.5, 0.0), 33922: tiepoint})
    Image.fromarray(image).save(tmp_path / "plain.tif")
    assert run_cli(model_file, [tmp_path / "geo.tif", tmp_path / "plain.tif"], tmp_path / "out") == 1
    (line,) = capsys.readouterr().err.splitlines()[:1]
    assert str(tmp_path / "geo.tif") in line and 'pip install "seglib[geo]"' in line
    np.testing.assert_array_equal(read_classes(tmp_path / "out" / "plain_classes.png"), truth)


def test_16_bit_tiff_without_rasterio_says_how_to_get_the_extra(tmp_path, model_file, monkeypatch, capsys):
    image, _ = pattern(30, 40)
    write_geotiff(tmp_path / "scene16.tif", image.astype(np.uint16) * 257)
    monkeypatch.setattr("seglib.predict.images._rasterio", lambda: None)
    assert run_cli(model_file, [tmp_path / "scene16.tif"], tmp_path / "out") == 1
    assert "Pillow reads 8-bit RGB TIFFs only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Scores for the report


def write_pair(folder: Path, stem: str, height: int, width: int, off_palette: int = 0):
    """An image and its mask in the palette's colours; the first ``off_palette`` mask pixels black."""
    image, truth = pattern(height, width)
    mask = PALETTE_RGB[truth]
    mask.reshape(-1, 3)[:off_palette] = 0
    folder.mkdir(exist_ok=True)
    Image.fromarray(image).save(folder / f"{stem}.png")
    Image.fromarray(mask).save(folder / f"{stem}_mask.png")
    return folder / f"{stem}.png", folder / f"{stem}_mask.png"


def test_whole_image_scores_per_mode_with_off_palette_pixels_unlabeled(tmp_path):
    pairs = [write_pair(tmp_path, "a", 40, 50), write_pair(tmp_path, "b", 70, 33, off_palette=7)]
    scores = score_whole_images(known_model(), pairs)
    assert list(scores) == ["tiles", "blend", "blend+tta"]
    _, truth_b = pattern(70, 33)
    unlabeled = CLASS_NAMES.index("Unlabeled")
    wrong = np.bincount(truth_b.ravel()[:7], minlength=NUM_CLASSES)  # predicted right, labelled Unlabeled
    for score in scores.values():
        confusion = np.array(score["confusion"])
        assert confusion.sum() == 40 * 50 + 70 * 33 and score["images"] == 2
        off_diagonal = confusion - np.diag(np.diag(confusion))
        np.testing.assert_array_equal(off_diagonal[unlabeled], wrong * (np.arange(NUM_CLASSES) != unlabeled))
        assert off_diagonal.sum() == wrong.sum() - wrong[unlabeled]
        assert score["mean_iou"] == pytest.approx(np.mean(score["per_class_iou"])) and score["mean_iou"] < 1
        assert score["seconds"] > 0


def test_figure_arrays_are_image_mask_and_prediction_in_mask_colours(tmp_path):
    image_path, mask_path = write_pair(tmp_path, "a", 40, 50)
    arrays = figure_arrays(known_model(), image_path, mask_path)
    assert arrays["image"].shape == arrays["mask"].shape == arrays["prediction"].shape == (40, 50, 3)
    np.testing.assert_array_equal(arrays["prediction"], arrays["mask"])
    np.testing.assert_array_equal(arrays["image"], np.asarray(Image.open(image_path)))


# ---------------------------------------------------------------------------------------------
# The other backend


def test_jax_backend_writes_the_same_mask(tmp_path, model_file):
    pytest.importorskip("jax")
    image, truth = pattern(45, 70)
    Image.fromarray(image).save(tmp_path / "scene.png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seglib.cli",
            "predict",
            str(model_file),
            str(tmp_path / "scene.png"),
            "--out",
            str(tmp_path / "out"),
            "--tta",
        ],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    areas = json.loads((tmp_path / "out" / "scene_areas.json").read_text())
    assert areas["settings"]["backend"] == "jax"
    np.testing.assert_array_equal(read_classes(tmp_path / "out" / "scene_classes.png"), truth)
