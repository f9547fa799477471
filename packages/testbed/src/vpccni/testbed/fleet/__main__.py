from vpccni.testbed.fleet.app import main

raise SystemExit(main())
