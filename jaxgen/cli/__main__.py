"""`python -m jaxgen.cli ...`: the `jaxgen` command without its console script."""

import sys

from jaxgen.cli import main

sys.exit(main())
