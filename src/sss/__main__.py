import sys

from sss.cli.main import main

sys.exit(main())
