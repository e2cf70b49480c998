"""The data path's first room: dataset (pairs, labels, patches), its disk cache, the split.

``seglib.data.pairs`` finds which image goes with which mask; ``seglib.data.dataset`` reads
and labels the files and cuts patches; ``seglib.data.cache`` keeps prepared patches on disk;
``seglib.data.split`` chooses and saves a run's split; ``seglib.data.embedded`` writes the
embedded default dataset; ``seglib.data.model_file`` checks a saved model file before Keras
reads it. The names below are the ones other modules and the notebooks use.
"""

from seglib.data.cache import cache_root
from seglib.data.cache import prune as prune_cache
from seglib.data.dataset import (
    Patches,
    class_counts,
    class_shares,
    describe_off_palette,
    labels_from_codes,
    prepare,
    read_rgb,
    rgb_to_labels,
    scale_patches,
)
from seglib.data.errors import DataError, DatasetNotFoundError
from seglib.data.model_file import (
    check_model_file,
    read_recipe,
    trained_with_augmentation,
    write_recipe,
    zip_problem,
)
from seglib.data.pairs import Pair, find_pairs, natural_key
from seglib.data.split import (
    SPLIT_NAMES,
    Arrays,
    load_split,
    make_split,
    model_inputs,
    save_split,
    split,
    split_class_shares,
    subsample,
)
from seglib.palette import CLASS_NAMES, NUM_CLASSES, PALETTE, UNLABELED, hex_colour

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "PALETTE",
    "SPLIT_NAMES",
    "UNLABELED",
    "Arrays",
    "DataError",
    "DatasetNotFoundError",
    "Pair",
    "Patches",
    "cache_root",
    "check_model_file",
    "class_counts",
    "class_shares",
    "describe_off_palette",
    "find_pairs",
    "hex_colour",
    "labels_from_codes",
    "load_split",
    "make_split",
    "model_inputs",
    "natural_key",
    "prepare",
    "prune_cache",
    "read_recipe",
    "read_rgb",
    "rgb_to_labels",
    "save_split",
    "scale_patches",
    "split",
    "split_class_shares",
    "subsample",
    "trained_with_augmentation",
    "write_recipe",
    "zip_problem",
]
