"""`python -m spec_impl` is the `spec-impl` command."""

import sys

from spec_impl.cli import main

sys.exit(main())
