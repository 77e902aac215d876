"""The detectors: SD2Net, STD2Net and LRRNet, their registry, padding, weights files and export.

Importing this package loads nothing heavy: the model names are here for torch-free callers (the
API side's settings); ``models.registry`` and the model modules import torch.
"""

MODEL_NAMES = ("sd2net", "std2net", "lrrnet")
