"""A stand-in for ``google.colab`` (tests only): what seglib calls of it, on a local folder.

``drive.mount`` links ``MOUNTPOINT/MyDrive`` to ``$SEGLIB_STANDIN_DRIVE``, ``userdata.get``
reads ``$SEGLIB_STANDIN_SECRETS`` (JSON), and ``output`` records the proxied ports in
``$SEGLIB_STANDIN_LOG``. ``sitecustomize.py`` beside ``google/`` imports it at start-up, so a
kernel started with this folder on PYTHONPATH believes it runs in Colab from its first cell.
"""

from google.colab import drive, output, userdata  # noqa: F401
