"""Write the demo data set the README runs on: synthetic parts in train/ and test/ splits, with masks.

python examples/make_tiny_screws.py [examples/tiny-screws]
"""

import sys

from anomalycli.data.synthetic import make_dataset

if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "examples/tiny-screws"
    make_dataset(target, n_good=160, n_per_defect=20, size=128, seed=0, masks=True, split="train")
    make_dataset(target, n_good=40, n_per_defect=10, size=128, seed=1, masks=True, split="test")
    print(f"wrote {target}: train/ (160 good, 40 defective) and test/ (40 good, 20 defective), masks in ground_truth/")
