"""seglib: U-Net segmentation of aerial imagery, tuned with HyperBand; notebooks 01-04 headless.

Modules follow the path data takes, each importing only those below it (docs/architecture.md):
palette -> settings -> artifacts -> data -> model -> losses -> metrics -> train -> evaluate ->
hpo, predict -> report -> pipeline -> run, colab -> cli. Importing seglib imports no
deep-learning framework; keras is imported by the modules that need it, so ``KERAS_BACKEND``
can still be chosen after ``import seglib``.
"""

__version__ = "0.1.0"
