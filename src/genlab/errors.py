"""User-facing errors.

Every failure a user can cause (missing data, a corrupt file, a bad option, a run
directory that is not one, a NaN loss) is raised as a :class:`GenlabError` whose
message is one sentence saying what is wrong and what to do. The CLI prints it and
exits with status 2; library users can catch it.

A message names a setting as ``{section.field}`` (``{train.lr}``, ``{data.root}``), so that each
reader is told in their own words: a library user reads the setting's name (``train.lr``), the
command line its flag (``--lr``, from :data:`genlab.config.FLAGS`), through :func:`render`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SETTING = re.compile(r"\{\{?([a-z_]+\.[a-z_]+)\}?\}")


def render(text: str, names: Mapping[str, str] | None = None) -> str:
    """``text`` with each ``{section.field}`` said as ``names[section.field]`` (default: the setting's name)."""
    names = names or {}
    return _SETTING.sub(lambda m: names.get(m.group(1), m.group(1)), text)


class GenlabError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    @property
    def template(self) -> str:
        """The message with its settings still as ``{section.field}`` (to pass on for another reader to render)."""
        return super().__str__()

    def render(self, names: Mapping[str, str] | None = None) -> str:
        return render(self.template, names)

    def __str__(self) -> str:
        return self.render()


class DataError(GenlabError):
    """A dataset is missing, truncated, corrupt or unknown."""


class ConfigError(GenlabError):
    """An option or configuration file is invalid."""


class RunError(GenlabError):
    """A run directory or checkpoint is missing, corrupt or does not match its config."""


class TrainingError(GenlabError):
    """Training cannot go on (for example, the loss became NaN)."""


class StorageError(GenlabError):
    """The disk said no: full, read-only, or not ours to write (nothing half-written is left)."""
