"""``google.colab.drive`` stand-in: Drive is a local folder, linked at the mount point."""

import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    target = os.environ.get("SEGLIB_STANDIN_DRIVE")
    if not target:
        raise ValueError("mount failed: no Drive for this stand-in (set SEGLIB_STANDIN_DRIVE)")
    Path(target).mkdir(parents=True, exist_ok=True)
    my_drive = Path(mountpoint) / "MyDrive"
    my_drive.parent.mkdir(parents=True, exist_ok=True)
    if not my_drive.exists():
        my_drive.symlink_to(target, target_is_directory=True)
    print(f"Mounted at {mountpoint}")
