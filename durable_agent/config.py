"""Configuration in one place: the environment, plus a `.env` file, read once.

Every setting the course uses is a field of `Settings`. `load_dotenv()` copies a `.env` file (looked up in
the current folder and its parents) into `os.environ` without overriding what is already set, so that
LiteLLM finds provider keys such as `OPENAI_API_KEY` where it always looks for them. Keys are never copied
into workflow inputs: they stay in the worker's environment, out of Temporal's event history.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

OFFLINE_MODEL = "offline/durable-agent"
DEFAULT_TASK_QUEUE = "durable-agent"


def find_dotenv(start: Path | None = None) -> Path | None:
    """Return the nearest `.env` in `start` (default: the current folder) or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".env"
        if candidate.is_file():
            return candidate
    return None


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse `KEY=value` lines; `#` comments, blank lines, `export ` prefixes and quotes are allowed."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def load_dotenv(path: Path | None = None) -> Path | None:
    """Copy a `.env` file into `os.environ` (existing variables win). Returns the file used, if any."""
    path = path or find_dotenv()
    if path is None:
        return None
    for key, value in parse_dotenv(path.read_text(encoding="utf-8")).items():
        os.environ.setdefault(key, value)
    return path


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """What the worker, the client and the CLI need to know. Secrets are kept out of `repr()`."""

    llm_model: str = OFFLINE_MODEL
    llm_api_base: str | None = None
    llm_timeout_seconds: float = 60.0
    temporal_address: str | None = None  # None: start the embedded dev server
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_api_key: str | None = field(default=None, repr=False)
    task_queue: str = DEFAULT_TASK_QUEUE
    temporal_db_file: str | None = None  # persist the embedded server to this SQLite file

    @property
    def offline(self) -> bool:
        return self.llm_model.startswith("offline/")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            llm_model=env.get("LLM_MODEL") or OFFLINE_MODEL,
            llm_api_base=env.get("LLM_API_BASE") or None,
            llm_timeout_seconds=float(env.get("LLM_TIMEOUT_SECONDS") or 60),
            temporal_address=env.get("TEMPORAL_ADDRESS") or None,
            temporal_namespace=env.get("TEMPORAL_NAMESPACE") or "default",
            temporal_tls=_flag(env.get("TEMPORAL_TLS")) or bool(env.get("TEMPORAL_API_KEY")),
            temporal_api_key=env.get("TEMPORAL_API_KEY") or None,
            task_queue=env.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            temporal_db_file=env.get("TEMPORAL_DB_FILE") or None,
        )


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process: `.env` and the environment, read once."""
    load_dotenv()
    return Settings.from_env()


_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.I)


def redact_secrets(text: str) -> str:
    """Replace the value of every secret-looking environment variable in `text` with `***`.

    Used on error messages before they leave an activity, so a provider's error can never carry a key
    into the event history, a notebook output or a log.
    """
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and len(value) >= 8:
            text = text.replace(value, "***")
    return text
