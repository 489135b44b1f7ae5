"""Each method's defaults in one place: backbone and input size, and what --fast changes. No
PyTorch here: inspect reads the sizes without loading any model code."""

# Per method: the fine-tuned classifier is cheapest on Lite0; PatchCore's patch features are
# best on Lite1 (5-fold CV on screws; BENCHMARKS.md, Levers tried and not shipped).
# Both ship their weights with pip.
DEFAULT_BACKBONE = {"classifier": "efficientnet_lite0", "patchcore": "efficientnet_lite1", "hybrid": "efficientnet_lite1"}
# Screw defects are a few pixels wide: patch features see them better at 320 px than at 224 (the
# 224 px models are --fast's); the classifier keeps the ImageNet size, which fine-tuning on a CPU
# can afford.
# Patchcore and the hybrid start there and try larger where the images and defects call for it
# (data/resolution.py), within MAX_MS_PER_IMAGE of scoring an image on the training CPU: the
# 512 px screws' hybrid scores in about 90 ms an image on 2 cores, 320 px in about 30
# (BENCHMARKS.md, "Resolution"), so the budget admits 512 px with room and 640 px where a CPU is fast.
DEFAULT_IMAGE_SIZE = {"classifier": 224, "patchcore": 320, "hybrid": 320}
MAX_MS_PER_IMAGE = 250.0
# --fast: the backbone and size patchcore and the hybrid had before the 320 px default, about
# twice as fast to predict for a few points of AUROC less (BENCHMARKS.md, "Speed").
FAST_BACKBONE, FAST_IMAGE_SIZE = "efficientnet_lite0", 224

# The pixel threshold (patchcore, hybrid): the share of the training goods' out-of-fold map pixels
# it leaves above it. Regions of a map are its connected areas above that threshold.
PIXEL_FALSE_POSITIVE_RATE = 0.001
