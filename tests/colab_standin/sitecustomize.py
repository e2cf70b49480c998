"""On PYTHONPATH, makes the process a stand-in Colab runtime from its first line (tests only)."""

import google.colab  # noqa: F401
