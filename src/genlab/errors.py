"""User-facing errors.

Every failure a user can cause (missing data, a corrupt file, a bad option, a run
directory that is not one, a NaN loss) is raised as a :class:`GenlabError` whose
message is one sentence saying what is wrong and what to do. The CLI prints it and
exits with status 2; library users can catch it.
"""


class GenlabError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class DataError(GenlabError):
    """A dataset is missing, truncated, corrupt or unknown."""


class ConfigError(GenlabError):
    """An option or configuration file is invalid."""


class RunError(GenlabError):
    """A run directory or checkpoint is missing, corrupt or does not match its config."""


class TrainingError(GenlabError):
    """Training cannot go on (for example, the loss became NaN)."""
