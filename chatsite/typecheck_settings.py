"""Settings for mypy's Django plugin, which imports the settings module. DEBUG defaults to False, and then
SECRET_KEY is required; type checking needs neither a secret nor production values, so it imports the
settings as local development does. Never used to serve."""

import os

os.environ.setdefault("DEBUG", "True")

from chatsite.settings import *  # noqa: F403
