"""The lineage command: `python -m synth_assets.lineage <id>` (see synth_assets/reports/lineage.py)."""

import sys

from synth_assets.reports.lineage import main

if __name__ == "__main__":
    sys.exit(main())
