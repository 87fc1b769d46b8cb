"""`python -m consumers.stock`."""

from consumers.stock.service import main

raise SystemExit(main())
