import sys

from ggdefender.cli import main

sys.exit(main())
