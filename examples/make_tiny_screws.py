"""Write the demo data set the README runs on: synthetic parts, 160 good and 40 defective, with masks.

    python examples/make_tiny_screws.py examples/tiny-screws
"""

import sys

from anomalycli.synthetic import make_dataset

if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "examples/tiny-screws"
    make_dataset(target, n_good=160, n_per_defect=20, size=128, seed=0, masks=True)
    print(f"wrote {target}")
