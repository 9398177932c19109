import sys

from fastswin.cli import main

sys.exit(main())
