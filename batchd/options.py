"""Settings as a command line gives them: flags over the environment over the TOML file.

Every `batchd` subcommand loads its settings here, so a flag means the same everywhere.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from batchd import envvars
from batchd.errors import ConfigError
from batchd.settings import Settings

__all__ = ["_child_args", "_need_redis", "load_settings"]


def load_settings(args: argparse.Namespace, **extra: Any) -> Any:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    log: dict[str, Any] = {}
    if getattr(args, "log_level", None):
        log["level"] = args.log_level
    if getattr(args, "log_format", None):
        log["format"] = args.log_format
    # A misspelled variable would otherwise be ignored without a word (BATCHD_REDIS_URI: an
    # embedded Redis instead of the shared one), so every command refuses it.
    unknown = envvars.unknown(Settings, os.environ)
    if unknown:
        raise ConfigError("; ".join(unknown), unknown)
    settings = Settings.load(getattr(args, "config", None), **overrides)
    if log:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update=log)})
    return settings


def _child_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag, attr in (("--config", "config"), ("--log-level", "log_level"),
                       ("--log-format", "log_format")):  # fmt: skip
        value = getattr(args, attr, None)
        if value:
            out += [flag, str(value)]
    return out


def _need_redis(settings: Any) -> Any:
    if not settings.redis_url:
        raise ConfigError(
            "this command needs the daemon's Redis: set --redis-url or BATCHD_REDIS_URL",
            ["redis_url: unset"],
        )
    return settings
