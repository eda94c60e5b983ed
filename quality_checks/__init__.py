"""Data-quality expectations for every asset: GX 1.x suites and full-table SQL rules
(`suites.py`), run by `gx_runner.py`, exposed as Dagster asset checks (`checks.py`,
`all_asset_checks`)."""
