"""`ray job submit --working-dir . -- python jobs/train.py [--epochs 20] [--margin 0.2] [--min-faces 5] [--rollback]`.

A thin entrypoint: the same code as `facecluster train`: Ray Train fits the projection head (on the
cluster's GPUs when it has them), Ray Data re-projects every stored vector, the active version switches.
"""

import sys

from facecluster.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
