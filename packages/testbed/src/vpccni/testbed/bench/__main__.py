import sys

from vpccni.testbed.bench.app import main

sys.exit(main())
