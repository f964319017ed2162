import sys

from tkmia.cli import main

sys.exit(main())
