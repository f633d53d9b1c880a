"""Settings: typed, read once, failing at start-up with the variable's name (not its value)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents_def import choose_model
from tests.support.processes import PROJECT, clean_env
from townhall.settings import Settings, SettingsError
from townhall.turns.echo_model import EchoModel


def test_defaults_are_echo_mode_with_local_cors() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.model_mode == "echo"
    assert settings.cors_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    assert settings.max_message_chars == 4000
    assert not settings.tracing_enabled
    assert isinstance(choose_model(settings).model, EchoModel)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_MESSAGE_CHARS", "lots"),
        ("MAX_SESSIONS", "0"),
        ("SESSION_TTL_SECONDS", "-5"),
        ("LOG_LEVEL", "LOUD"),
        ("OPENAI_BASE_URL", "localhost:11434"),
        ("TRACING", "sometimes"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value}, env_file=None)


def test_error_never_echoes_a_value() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MAX_SESSIONS": "sk-secret-looking-value"}, env_file=None)
    assert "sk-secret" not in str(caught.value)


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "MODEL=from-file\nMAX_SESSIONS=7\nCORS_ORIGINS=http://a.test, http://b.test\n"
    )
    settings = Settings.from_env({"MODEL": "from-env"}, env_file=env_file)
    assert settings.model == "from-env"
    assert settings.max_sessions == 7
    assert settings.cors_origins == ("http://a.test", "http://b.test")


def test_model_choice_follows_the_settings() -> None:
    key_only = Settings.from_env({"OPENAI_API_KEY": "sk-test"}, env_file=None)
    base_url = Settings.from_env(
        {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "MODEL": "qwen2.5"}, env_file=None
    )
    assert (key_only.model_mode, key_only.tracing_enabled) == ("openai", True)
    assert (base_url.model_mode, base_url.tracing_enabled) == ("compatible", False)
    off = Settings.from_env({"OPENAI_API_KEY": "sk-test", "TRACING": "off"}, env_file=None)
    assert not off.tracing_enabled
    choice = choose_model(base_url)
    assert (choice.mode, choice.name) == ("compatible", "qwen2.5")
    assert choice.client is not None and str(choice.client.base_url).startswith("http://127.0.0.1")
    assert "sk-test" not in repr(key_only)


def test_env_example_lists_every_setting_and_parses() -> None:
    import re

    example = Path(__file__).resolve().parent.parent / ".env.example"
    names = {m.group(1) for m in re.finditer(r"^([A-Z_]+)=", example.read_text(), re.MULTILINE)}
    assert names == {field.upper() for field in Settings.model_fields}
    assert Settings.from_env({}, env_file=example).model_mode == "echo"


def test_a_blank_variable_means_its_default() -> None:
    blank = {"DATABASE_URL": " ", "SESSION_STORE": "", "OPENAI_API_KEY": "", "MAX_SESSIONS": ""}
    settings = Settings.from_env(blank, env_file=None)
    assert settings.database_url == "sqlite:///townhall.db"
    assert settings.session_store == "memory"
    assert settings.openai_api_key is None and settings.model_mode == "echo"
    assert settings.max_sessions == 10_000


def test_an_invalid_setting_stops_the_server_with_one_line() -> None:
    """`uvicorn api:app` with a bad variable: exit status 1 and one line naming it, no traceback."""
    env = clean_env(MAX_MESSAGE_CHARS="lots", SESSION_STORE="ftp://nowhere")
    started = subprocess.run(
        [sys.executable, "-m", "uvicorn", "api:app", "--port", "0"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in started.stderr.splitlines() if "cannot start" in line]
    assert started.returncode == 1
    assert "Traceback" not in started.stderr
    assert len(ours) == 1
    assert "MAX_MESSAGE_CHARS" in ours[0] and "SESSION_STORE" in ours[0]
    assert "lots" not in ours[0] and "nowhere" not in ours[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgresql://app:pw/SECRET-1@db.example:5432/town"),
        ("DATABASE_URL", "postgresql://app:pw#SECRET-2@db.example/town"),
        ("SESSION_STORE", "redis://:SECRET-3@cache.example:notaport/0"),
    ],
)
def test_a_url_its_client_cannot_parse_is_refused_without_echoing_it(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value}, env_file=None)
    assert variable in str(refused.value)
    assert "SECRET" not in str(refused.value)
