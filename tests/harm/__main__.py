"""``python -m tests.harm [SCENARIO ...]``: measure the harm matrix and print its table."""

import sys

from tests.harm.matrix import main

sys.exit(main(sys.argv[1:]))
