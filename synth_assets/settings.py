"""The project's lasting settings: one TOML file that every run reads.

Runs started by a sensor, a schedule or an automation condition get no launchpad config,
so what should last (the corpus to ingest, how much to generate) lives here, and every
run, whoever starts it, uses it. The launchpad is for one-off overrides: a value given
there wins for that run only, and the next automatic run is back on this file.

The file is `synth_assets.toml` at the project root, or the path in env
SYNTH_ASSETS_SETTINGS. It is read when a run (or a sensor tick) asks for a setting, so an
edit takes effect on the next run without reloading the code location. Absent file =
every default. One table per asset, named after it:

    [raw_stack_plus]
    sources = [
      { kind = "the_stack", path = "/data/the-stack-dedup/python", name = "the_stack" },
      { kind = "stackoverflow", path = "/data/stackexchange/Posts.xml" },
    ]

Every asset's config follows the same rule (`with_settings`): a field the launchpad set
wins for that run, else the value under the asset's table here, else the field's default:

    [code_exercises]
    n_exercises = 10000

    [synthetic_textbook]
    max_tokens = 1200

Endpoints and budgets are the `llm` resource's business (its fields, or OPENAI_BASE_URL,
OPENAI_API_KEY, SYNTH_ASSETS_CHAT_MODEL in the environment), and the lake's the `warehouse`
resource's: resources already apply to every run.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")

SETTINGS_ENV = "SYNTH_ASSETS_SETTINGS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "synth_assets.toml"


class SettingsError(ValueError):
    """The settings file exists but cannot be used (bad TOML, a wrong type)."""


def settings_path() -> Path:
    """Where the settings are read from (the file need not exist)."""
    configured = os.environ.get(SETTINGS_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_SETTINGS_FILE


def load_settings() -> dict[str, Any]:
    """The whole file as a dict ({} when there is none). A file named in env
    SYNTH_ASSETS_SETTINGS must exist: a typo there must not silently mean defaults."""
    path = settings_path()
    if not path.exists():
        if os.environ.get(SETTINGS_ENV):
            raise SettingsError(f"{SETTINGS_ENV} names {path}, which does not exist")
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc}") from exc


def asset_settings(asset_name: str) -> dict[str, Any]:
    """The `[asset_name]` table of the settings file ({} when absent)."""
    table = load_settings().get(asset_name, {})
    if not isinstance(table, dict):
        raise SettingsError(f"[{asset_name}] in {settings_path()} must be a table, not {type(table).__name__}")
    return table


def with_settings(config: ConfigT, asset_name: str, exclude: tuple[str, ...] = ()) -> ConfigT:
    """`config` with each field the launchpad did not set taken from `[asset_name]` in the
    settings file: the launchpad wins for its run, the file for every run (sensor,
    schedule and automation runs included), the field's default where neither says.

    Which fields the launchpad set is pydantic's `model_fields_set`: Dagster builds the
    config from the run config's keys only. A key in the file that is not a field of the
    asset's config, or a value of the wrong type, is a SettingsError naming the file.
    Keys in `exclude` are left to the asset (raw_stack_plus reads its `sources` itself)."""
    table = {name: value for name, value in asset_settings(asset_name).items() if name not in exclude}
    if not table:
        return config
    fields = type(config).model_fields
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise SettingsError(
            f"[{asset_name}] in {settings_path()} has {', '.join(unknown)}, which "
            f"{'is not a setting' if len(unknown) == 1 else 'are not settings'} of {asset_name}; "
            f"its settings are: {', '.join(sorted(fields))}"
        )
    explicit = config.model_fields_set
    merged = {name: getattr(config, name) for name in fields}
    merged.update({name: value for name, value in table.items() if name not in explicit})
    try:
        return type(config)(**merged)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[{asset_name}] in {settings_path()}: {exc}") from exc


def settings_origin(config: Any, asset_name: str) -> dict[str, str]:
    """Where each setting that differs from its default came from ("launchpad" or
    "settings file"), for a materialization's metadata."""
    table = asset_settings(asset_name)
    explicit = getattr(config, "model_fields_set", set())
    origin = {name: "launchpad" for name in explicit}
    origin.update({name: "settings file" for name in table if name not in explicit})
    return origin


def lasting_compute(compute: Any = None):
    """The step's `compute` resource (`resources.compute.Compute`; a default one when None) with the `[compute]` table of the settings file under it, so every run, whoever
    starts it, uses the same cluster settings:

        [compute]
        ray_address = "ray://head.internal:10001"   # env RAY_ADDRESS, when set, wins
        num_cpus_per_task = 1
        max_task_retries = 3
        max_in_flight = 64

    A field the resource sets (in the definitions, or in a test) to other than its default
    wins over the file: Dagster hands a step only the values that differ from the defaults,
    so one set to its default counts as unset. A dagster-ray `ray_cluster` is the
    resource's alone (it is code, not a setting).
    No table, no RAY_ADDRESS, no cluster resource: in-process, as before."""
    from resources.compute import RAY_ADDRESS_ENV, Compute

    compute = Compute() if compute is None else compute
    environment = os.environ.get(RAY_ADDRESS_ENV)
    if environment and "ray_address" not in compute.model_fields_set:
        # the env's cluster, even when the resource was built before RAY_ADDRESS was set
        fields = {name: getattr(compute, name) for name in compute.model_fields_set}
        compute = Compute(**{**fields, "ray_address": environment})
    return with_settings(compute, "compute", exclude=("ray_address",) if environment else ())
