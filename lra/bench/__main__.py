"""`python -m lra.bench --worker SPEC RESULT | --probe RESULT`: the subprocess side."""

import sys

from lra.bench.measure import worker_main

sys.exit(worker_main(sys.argv[1:]))
