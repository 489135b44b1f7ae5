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

# The memory bank (patchcore, hybrid): a coreset of CORESET_RATIO of the good patches (a full data
# set's: 5,120 of 320 screws at 320 px), but with a few goods never fewer than MIN_BANK_PATCHES
# (every patch, where there are fewer): 1 % of 16 goods was 256 patches. The floor fades with the
# goods (MIN_BANK_PATCHES x FEW_GOODS / goods), so a full data set's bank is the 1 % it always was.
# 16 screws learnt at 24 turns: AUROC 0.93 with 8,192 rows, 0.92 with 6,144, 0.93 with 12,288 (a
# search 1.5x as long); 8,192 rows search in about 1.6x the time of 5,120 (BENCHMARKS.md, "A new
# product from a few goods").
CORESET_RATIO, MIN_BANK_PATCHES, FEW_GOODS = 0.01, 8192, 32


def bank_ratio(good_patches: int, good_images: int, coreset_ratio: float | None = None) -> float:
    """The share of ``good_patches`` (of ``good_images`` good images, turned copies not counted) the
    bank keeps: ``coreset_ratio`` where the user gave one, else the rule above."""
    if coreset_ratio is not None:
        return coreset_ratio
    floor = MIN_BANK_PATCHES * min(1.0, FEW_GOODS / max(1, good_images))
    return max(CORESET_RATIO, min(1.0, floor / max(1, good_patches)))


# A few goods and no defects (patchcore): each good is scored out of fold by the bank of all the
# others (leave one out), not of 4/5 of them, so that its score is the one a new good part gets
# from the whole bank: the threshold, the highest of those scores, then flags new goods at the
# rate it announces (with 5 folds, 16 screws' threshold flagged none of 75 new goods, announcing
# 5.9 %, and caught 46 % of the defects). A fold's coreset costs the same however many folds.
LEAVE_ONE_OUT_GOODS = FEW_GOODS
