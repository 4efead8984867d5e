import sys

from lls_cli import main

sys.exit(main())
