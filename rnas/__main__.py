import sys

from rnas.cli import main

sys.exit(main())
