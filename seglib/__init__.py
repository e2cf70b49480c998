"""seglib: U-Net segmentation of aerial imagery, tuned with HyperBand on NNI.

Modules follow the path data takes: data -> model -> losses/metrics -> train -> hpo -> report.
Importing seglib imports no deep-learning framework; keras is imported by the modules that
need it, so ``KERAS_BACKEND`` can still be chosen after ``import seglib``.
"""

__version__ = "0.1.0"
