"""`python -m dcp_replicator ...`: the same as `dcp replicate ...`."""

import sys

from dcp_replicator.cli import main

sys.exit(main(sys.argv[1:]))
