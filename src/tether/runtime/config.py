"""Finding and reading the host's `tether.toml`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tether.contract.errors import PolicyError, Problem
from tether.contract.policy import Policy, parse_policy

CONFIG_NAME = "tether.toml"
CONFIG_ENV = "TETHER_CONFIG"


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The policy plus the folder its relative paths are relative to."""

    policy: Policy
    base_dir: Path
    path: Path | None

    @property
    def plugin_dirs(self) -> list[Path]:
        return [self.base_dir / d for d in self.policy.host.plugin_dirs]

    @property
    def data_dir(self) -> Path:
        return self.base_dir / self.policy.host.data_dir


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> HostConfig:
    """Read `path`, else `$TETHER_CONFIG`, else `./tether.toml`; defaults when none exists.

    Relative paths inside the file are relative to the file's folder.
    """
    here = cwd or Path.cwd()
    explicit = path or os.environ.get(CONFIG_ENV)
    if explicit:
        file = Path(explicit)
        if not file.is_absolute():
            file = here / file
        if not file.is_file():
            raise PolicyError(
                [Problem(str(file), "(file)", "does not exist; check the --config path")]
            )
    else:
        file = here / CONFIG_NAME
        if not file.is_file():
            return HostConfig(Policy(), here, None)
    policy = parse_policy(file.read_bytes(), where=str(file))
    return HostConfig(policy, file.parent.resolve(), file)
