"""`python -m consumers.locations`: the live-location service."""

from consumers.locations.service import main

raise SystemExit(main())
