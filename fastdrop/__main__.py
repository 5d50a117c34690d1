"""``python -m fastdrop``: the fastdrop command line."""
import sys

from fastdrop.cli import main

sys.exit(main())
