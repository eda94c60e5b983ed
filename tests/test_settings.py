"""with_settings: the launchpad wins for its run, the settings file for every run, the
field's default where neither says; a wrong key or type is a clear SettingsError."""


import dagster as dg
import pytest

from synth_assets.settings import SettingsError, settings_origin, with_settings


class SizesConfig(dg.Config):
    n_items: int = 24
    max_tokens: int = 400


def materialized_config(run_config=None) -> SizesConfig:
    seen: list[SizesConfig] = []

    @dg.asset(name="sized")
    def sized(config: SizesConfig) -> None:
        seen.append(with_settings(config, "sized"))

    assert dg.materialize([sized], run_config=run_config or {}).success
    return seen[0]


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    path = tmp_path / "synth_assets.toml"
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(path))
    return path


def test_the_file_sets_every_run_and_the_launchpad_wins_for_its_own(settings_file):
    settings_file.write_text("[sized]\nn_items = 10000\nmax_tokens = 1200\n")
    assert materialized_config() == SizesConfig(n_items=10000, max_tokens=1200)
    one_off = materialized_config({"ops": {"sized": {"config": {"n_items": 5}}}})
    assert one_off == SizesConfig(n_items=5, max_tokens=1200)
    assert settings_origin(SizesConfig(n_items=5), "sized") == {"n_items": "launchpad", "max_tokens": "settings file"}


def test_no_table_means_the_defaults(settings_file):
    settings_file.write_text("[other]\nx = 1\n")
    assert materialized_config() == SizesConfig()


def test_an_unknown_key_or_a_wrong_type_names_the_file(settings_file):
    settings_file.write_text("[sized]\nn_itemz = 3\n")
    with pytest.raises(SettingsError, match="n_itemz.*its settings are: max_tokens, n_items"):
        with_settings(SizesConfig(), "sized")
    settings_file.write_text('[sized]\nn_items = "many"\n')
    with pytest.raises(SettingsError, match=str(settings_file)):
        with_settings(SizesConfig(), "sized")


def test_the_compute_table_configures_the_engine_of_every_step_and_ray_address_in_the_env_wins(settings_file, monkeypatch):
    from synth_assets.settings import lasting_compute

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings_file.write_text("[other]\nx = 1\n")
    assert lasting_compute().model_dump() == {"ray_address": None, "ray_cluster": None, "num_cpus": None, "num_cpus_per_task": 1.0,
                                              "max_task_retries": 3, "max_in_flight": None}
    assert not lasting_compute().distributed  # no file, no env: in-process
    settings_file.write_text('[compute]\nray_address = "ray://head:10001"\nnum_cpus_per_task = 2\nmax_in_flight = 8\n')
    compute = lasting_compute()
    assert (compute.ray_address, compute.num_cpus_per_task, compute.max_in_flight, compute.max_task_retries) == (
        "ray://head:10001", 2.0, 8, 3)
    monkeypatch.setenv("RAY_ADDRESS", "ray://other:10001")
    assert lasting_compute().ray_address == "ray://other:10001"  # the environment's cluster, the file's sizes
    assert lasting_compute().max_in_flight == 8
    settings_file.write_text("[compute]\nmax_inflight = 8\n")
    with pytest.raises(SettingsError, match="max_inflight.*its settings are: max_in_flight, max_task_retries"):
        lasting_compute()


def test_the_compute_resource_s_own_fields_win_over_the_file_and_a_late_ray_address_still_counts(settings_file, monkeypatch):
    from resources.compute import Compute
    from synth_assets.settings import lasting_compute

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings_file.write_text('[compute]\nray_address = "ray://head:10001"\nmax_in_flight = 8\n')
    resource = Compute(max_in_flight=2)  # as the definitions (or a test) set it
    assert (lasting_compute(resource).max_in_flight, lasting_compute(resource).ray_address) == (2, "ray://head:10001")
    built_at_load = Compute()  # the code location loaded before RAY_ADDRESS was set for the run
    monkeypatch.setenv("RAY_ADDRESS", "ray://late:10001")
    assert lasting_compute(built_at_load).ray_address == "ray://late:10001"
    assert lasting_compute(built_at_load).max_in_flight == 8
    settings_file.write_text('[compute]\nray_cluster = "local"\n')  # a cluster resource is code, not a setting
    with pytest.raises(SettingsError, match="ray_cluster"):
        lasting_compute(built_at_load)


def test_inside_a_dagster_step_the_file_and_the_env_still_name_the_cluster(settings_file, monkeypatch):
    """What a step sees: Dagster rebuilds the resource for the run, so the precedence must
    hold on that copy, not only on one built in a test."""
    import dagster as dg

    from resources.compute import Compute
    from synth_assets.settings import lasting_compute

    @dg.asset
    def engine_settings(compute: Compute) -> tuple:
        seen = lasting_compute(compute)
        return seen.ray_address, seen.max_in_flight, seen.max_task_retries, seen.distributed

    def in_a_step(resource: Compute) -> tuple:
        return dg.materialize([engine_settings], resources={"compute": resource}).output_for_node("engine_settings")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings_file.write_text('[compute]\nray_address = "ray://file:10001"\nmax_in_flight = 8\nmax_task_retries = 5\n')
    assert in_a_step(Compute()) == ("ray://file:10001", 8, 5, True)
    assert in_a_step(Compute(max_in_flight=2)) == ("ray://file:10001", 2, 5, True)  # the resource's own value wins
    monkeypatch.setenv("RAY_ADDRESS", "ray://env:10001")
    assert in_a_step(Compute()) == ("ray://env:10001", 8, 5, True)
    assert in_a_step(Compute(ray_address="ray://resource:10001"))[0] == "ray://resource:10001"
    settings_file.write_text("[other]\nx = 1\n")
    monkeypatch.delenv("RAY_ADDRESS")
    assert in_a_step(Compute()) == (None, None, 3, False)
