"""Where adntn keeps state on disk, and its version: the one module that decides either.

- config ($ADNTN_HOME, else ~/.config/adntn): signing keys, trusted keys, the torch.compile cache;
- cache ($ADNTN_CACHE, else ~/.cache/adntn): contraction paths, downloaded weights;
- tuning records ($ADNTN_TUNING, else the cache's `tuning/`).
"""
from __future__ import annotations

import os
from pathlib import Path

VERSION = "0.1.0"


def config_dir() -> Path:
    return Path(os.environ.get("ADNTN_HOME") or Path.home() / ".config" / "adntn")


def cache_dir() -> Path:
    return Path(os.environ.get("ADNTN_CACHE") or Path.home() / ".cache" / "adntn")


def records_dir() -> Path:
    return Path(os.environ.get("ADNTN_TUNING") or cache_dir() / "tuning")


def torch_compile_cache_dir() -> Path:
    return config_dir() / "cache" / "torch_compile"
