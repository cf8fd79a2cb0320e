"""`ray job submit --working-dir . -- python jobs/ingest.py SOURCE [--library L] [--limit N] [--force]`.

A thin entrypoint: the same code as `facecluster ingest`; inside a Ray job it attaches to the
cluster through RAY_ADDRESS, so the run shows in the dashboard's job list.
"""

import sys

from facecluster.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
