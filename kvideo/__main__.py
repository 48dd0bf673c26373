import sys

from kvideo.cli import main

sys.exit(main())
