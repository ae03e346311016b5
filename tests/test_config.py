"""Configuration: the environment and `.env`, read once; secrets stay out of reprs and error messages."""

from __future__ import annotations

import os

from durable_agent.config import OFFLINE_MODEL, Settings, find_dotenv, load_dotenv, parse_dotenv, redact_secrets


def test_parse_dotenv_handles_comments_quotes_and_export():
    text = """
# a comment
LLM_MODEL=openai/gpt-4o-mini
export OPENAI_API_KEY="sk-abc"
TEMPORAL_NAMESPACE='team' 
LLM_TIMEOUT_SECONDS=30 # seconds
not a line
"""
    assert parse_dotenv(text) == {
        "LLM_MODEL": "openai/gpt-4o-mini", "OPENAI_API_KEY": "sk-abc", "TEMPORAL_NAMESPACE": "team",
        "LLM_TIMEOUT_SECONDS": "30",
    }


def test_dotenv_is_found_in_a_parent_folder_and_never_overrides_the_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DA_TEST_FROM_FILE=file\nDA_TEST_BOTH=file\n")
    nested = tmp_path / "notebooks" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.setenv("DA_TEST_BOTH", "environment")
    monkeypatch.delenv("DA_TEST_FROM_FILE", raising=False)
    assert find_dotenv() == tmp_path / ".env"
    assert load_dotenv() == tmp_path / ".env"
    assert os.environ["DA_TEST_FROM_FILE"] == "file" and os.environ["DA_TEST_BOTH"] == "environment"
    monkeypatch.delenv("DA_TEST_FROM_FILE")


def test_settings_defaults_are_offline_and_embedded():
    current = Settings.from_env({})
    assert current.llm_model == OFFLINE_MODEL and current.offline and current.temporal_address is None
    assert Settings.from_env({"LLM_MODEL": ""}).llm_model == OFFLINE_MODEL  # empty means "not set"


def test_settings_for_temporal_cloud_hide_the_key():
    cloud = Settings.from_env({"TEMPORAL_ADDRESS": "ns.a1.tmprl.cloud:7233", "TEMPORAL_API_KEY": "secret-key-123",
                               "LLM_MODEL": "openai/gpt-4o-mini"})
    assert cloud.temporal_tls and not cloud.offline and cloud.temporal_api_key == "secret-key-123"
    assert "secret-key-123" not in repr(cloud)


def test_redact_secrets(monkeypatch):
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "sk-live-0123456789")
    assert redact_secrets("bad key sk-live-0123456789 given") == "bad key *** given"
