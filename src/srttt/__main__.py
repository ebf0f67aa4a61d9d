from srttt.cli import main

raise SystemExit(main())
