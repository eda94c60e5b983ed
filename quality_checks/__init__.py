"""Data-quality expectations for every asset: GX 1.x suites and full-table SQL rules, one
module per Dagster group (`ingest`, `filtering`, `synthesis`, `decontamination`,
`reports`) built from the shared rule types in `rules.py`, run by `gx_runner.py`, and
assembled into Dagster asset checks in `checks.py` (`all_asset_checks`). Every threshold,
label and table name an asset defines is read from the asset's module, never copied."""
