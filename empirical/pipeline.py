"""Former name of :mod:`empirical.build` (``lls score`` / ``lls select`` / ``lls build``); kept for old imports."""

from empirical.build import *  # noqa: F401,F403
from empirical.build import __all__  # noqa: F401
