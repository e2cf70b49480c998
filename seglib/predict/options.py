"""What ``seglib predict`` offers, in a module that imports nothing.

The command line is parsed (and ``--help`` or a usage mistake answered) from these names
before numpy, Pillow or Keras are imported: importing Keras alone takes 6-15 s.
"""

MODES = ("tiles", "blend")
DEFAULT_BATCH_SIZE = 8  # windows per model call (x 8 calls per batch with tta)
