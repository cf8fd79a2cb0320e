"""`ray job submit --working-dir . -- python jobs/cluster.py --library L [--shards 16] [--method dual] …`.

A thin entrypoint: the same code as `facecluster cluster`; `--shards` spreads a full run of a large
library over the cluster's nodes, no process holding more than its shard's vectors.
"""

import sys

from facecluster.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["cluster", *sys.argv[1:]]))
