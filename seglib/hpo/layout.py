"""Where an experiment keeps things: one output folder, shared by the driver, tuner and trials.

Pure paths (no NNI, no Keras), so the tuner process, the trial processes and the notebook
agree on them. With several machines the folder must be shared storage mounted at the same
path everywhere: warm start reads a configuration's checkpoint wherever its next rung runs.

    OUT/
      experiment.json          what was started: NNI id, port, tuner, settings (for resume/view)
      trial_code/settings.json what every trial reads (NNI's trial code directory: small)
      trial_code/split.npz     train/val indices into the prepared patches
      hyperband_state.json     the tuner's whole state, rewritten after every change
      dispatcher.json          the tuner's heartbeat (pid, time)
      dispatcher_error.txt     the traceback if the tuner crashed
      trials/<key>/            one folder per (configuration, budget): params.json,
                               history.json, result.json, model.keras, error.txt
      checkpoints/<config>/    seglib.train's per-epoch checkpoints of one configuration
      nni/                     NNI's experiment working directory (database, logs)
      trials.csv, trials.json, best.json   the export
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = "settings.json"
SPLIT_FILE = "split.npz"


@dataclass(frozen=True)
class Layout:
    """The paths of one experiment's output folder."""

    root: Path

    @classmethod
    def of(cls, root) -> "Layout":
        return cls(Path(root).expanduser().resolve())

    @property
    def experiment_file(self) -> Path:
        return self.root / "experiment.json"

    @property
    def trial_code(self) -> Path:
        return self.root / "trial_code"

    @property
    def settings_file(self) -> Path:
        return self.trial_code / SETTINGS_FILE

    @property
    def state_file(self) -> Path:
        return self.root / "hyperband_state.json"

    @property
    def heartbeat_file(self) -> Path:
        return self.root / "dispatcher.json"

    @property
    def dispatcher_error_file(self) -> Path:
        return self.root / "dispatcher_error.txt"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def nni_dir(self) -> Path:
        return self.root / "nni"

    @property
    def compile_cache(self) -> Path:
        return self.root / "compile_cache"

    def trial_dir(self, config_id: str, budget: int) -> Path:
        return self.trials / trial_key(config_id, budget)

    def checkpoint_dir(self, config_id: str) -> Path:
        return self.checkpoints / config_id


def trial_key(config_id: str, budget: int) -> str:
    """The folder name of one (configuration, budget) pair: ``c0007-b020``."""
    return f"{config_id}-b{int(budget):03d}"
