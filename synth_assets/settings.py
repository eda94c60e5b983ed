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

Endpoints and budgets are the `llm` resource's business (its fields, or OPENAI_BASE_URL,
OPENAI_API_KEY, SYNTH_ASSETS_CHAT_MODEL in the environment), and the lake's the `warehouse`
resource's: resources already apply to every run.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

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
