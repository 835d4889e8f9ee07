"""`python -m swarmgate`: the operator image's entrypoint."""

import sys

from swarmgate.operator.cli.main import main

sys.exit(main())
