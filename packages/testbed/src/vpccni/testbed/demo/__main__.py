import sys

from vpccni.testbed.demo.app import main

sys.exit(main())
