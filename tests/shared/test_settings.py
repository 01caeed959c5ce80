import pytest

from omniforge_shared.settings import ConfigError, load_settings


def test_a_bad_value_names_the_environment_variable(monkeypatch):
    from omniforge_gateway.settings import GatewaySettings

    monkeypatch.setenv("OMNIFORGE_GATEWAY_PORT", "eighty")
    with pytest.raises(ConfigError, match="OMNIFORGE_GATEWAY_PORT='eighty'"):
        load_settings(GatewaySettings)


def test_ports_and_addresses_come_from_the_environment(monkeypatch):
    from omniforge_gateway.settings import GatewaySettings
    from omniforge_text.settings import TextServiceSettings

    monkeypatch.setenv("OMNIFORGE_GATEWAY_PORT", "9123")
    monkeypatch.setenv("OMNIFORGE_GATEWAY_TEXT_ADDRESS", "10.0.0.5:7000")
    monkeypatch.setenv("OMNIFORGE_TEXT_PORT", "7000")
    monkeypatch.setenv("OMNIFORGE_DATABASE_URL", "sqlite:///x.db")
    g, t = load_settings(GatewaySettings), load_settings(TextServiceSettings)
    assert (g.port, g.text_address, t.port, t.database_url) == (9123, "10.0.0.5:7000", 7000, "sqlite:///x.db")


def test_a_shared_variable_is_named_as_it_is_set(monkeypatch):
    from omniforge_text.settings import TextServiceSettings

    monkeypatch.setenv("OMNIFORGE_TEXT_POLL_SECONDS", "-1")
    with pytest.raises(ConfigError, match="OMNIFORGE_TEXT_POLL_SECONDS='-1'"):
        load_settings(TextServiceSettings)
    from omniforge_shared.settings import _env_name

    assert _env_name(TextServiceSettings, "database_url", "OMNIFORGE_TEXT_") == "OMNIFORGE_DATABASE_URL"
