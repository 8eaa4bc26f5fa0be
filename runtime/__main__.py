"""`python -m runtime ...` is `tr2m-run ...`."""
import sys

from .entry import main

sys.exit(main())
