import sys

from rdnas.cli import main

sys.exit(main())
