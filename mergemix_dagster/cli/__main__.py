"""``python -m mergemix_dagster.cli``: the same as the ``mergemix`` console script."""

import sys

from mergemix_dagster.cli import main

sys.exit(main())
