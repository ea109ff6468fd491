"""`python -m e2e <step> [options] [-- pytest args]`: the kind tier's steps (see e2e/lib/flow.py)."""

from e2e.lib.flow import main

raise SystemExit(main())
