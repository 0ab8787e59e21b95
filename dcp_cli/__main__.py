import sys

from dcp_cli.main import main

sys.exit(main())
