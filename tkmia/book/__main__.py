"""``python -m tkmia.book execute ...``: see :mod:`tkmia.book.runner`."""

import sys

from tkmia.book.runner import main

sys.exit(main())
