import sys

from vpccni.testbed.chaos.app import main

sys.exit(main())
