"""pretty-align: PRETTY (Prefix Text as a Yarn, arXiv 2404.16766) for foundation LLMs.

Public API::

    from pretty_align import load_backend, make_prior, load_config, run_experiment, translate
"""

from __future__ import annotations

__version__ = "0.1.0"

from .backends import load_backend  # noqa: E402
from .decoding import Decoding  # noqa: E402
from .experiment.config import load_config  # noqa: E402
from .experiment.runner import run_experiment  # noqa: E402
from .languages import get_language  # noqa: E402
from .priors import make_prior  # noqa: E402
from .translate import translate  # noqa: E402

__all__ = ["Decoding", "get_language", "load_backend", "load_config", "make_prior", "run_experiment",
           "translate", "__version__"]
