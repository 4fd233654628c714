"""``python tests/engine/seg_cli.py ARGS``: the ``pointset`` command with the test
segmentation model registered (for subprocess and torchrun tests)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seg_testmodel  # noqa: E402,F401  (registers the model)

from pointset.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
