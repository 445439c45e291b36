import sys

from velotui.cli import main

sys.exit(main())
