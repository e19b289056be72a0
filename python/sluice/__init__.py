"""sluice from Python: run large batches of API calls as fast as every limit
allows, durably and resumably, through the ``sluice`` binary installed with
this package (no second engine).

    >>> import sluice
    >>> results = sluice.run(df, model="gpt-4o-mini", rpm=500)   # doctest: +SKIP
    >>> answers = sluice.read_results(results)                     # doctest: +SKIP

The binary is found beside this package (the wheel's scripts), or at
``$SLUICE_BINARY``.
"""

from ._binary import BINARY_ENV, binary
from ._results import read_results
from ._run import Results, export, iter_run, run, runs, status
from .errors import InvalidInputError, RunInterrupted, SluiceError

__all__ = [
    "BINARY_ENV",
    "InvalidInputError",
    "Results",
    "RunInterrupted",
    "SluiceError",
    "binary",
    "export",
    "iter_run",
    "read_results",
    "run",
    "runs",
    "status",
]

try:
    from importlib.metadata import version as _version

    __version__ = _version("sluice")
except Exception:  # not installed as a distribution (a source checkout)
    __version__ = "0.0.0"
