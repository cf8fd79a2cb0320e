"""`ray job submit --working-dir . -- python jobs/detect.py PATH...`: face detection over files or folders.

A thin entrypoint: the same code as `facecluster detect`.
"""

import sys

from facecluster.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["detect", *sys.argv[1:]]))
