"""Finding the ``sluice`` binary the wheel installed beside this package."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

#: Environment variable naming the binary to use instead of the installed one.
BINARY_ENV = "SLUICE_BINARY"


def binary() -> str:
    """Return the path of the ``sluice`` executable.

    Looked up in this order: ``$SLUICE_BINARY``; the scripts directory of the
    installation this package belongs to (where ``pip install`` of the wheel
    put it: the virtual environment's ``bin/``, or the user scheme's); then
    ``PATH``.

    Raises:
        FileNotFoundError: no executable was found (the message says where
            it looked and what to do).
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return override
        raise FileNotFoundError(
            f"${BINARY_ENV} is {override!r}, which is not an executable file; "
            "point it at a built sluice binary (e.g. target/debug/sluice) or unset it"
        )
    name = "sluice.exe" if os.name == "nt" else "sluice"
    looked = []
    schemes = [None]
    user = f"{os.name}_user"
    if user in sysconfig.get_scheme_names():
        schemes.append(user)
    for scheme in schemes:
        scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        if scripts:
            candidate = Path(scripts) / name
            looked.append(str(candidate.parent))
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    # Beside the interpreter: a venv used without activating it.
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"no sluice binary in {', '.join(looked) or 'the scripts directory'} or on PATH; "
        f"install the wheel (pip install sluice-*.whl), or set ${BINARY_ENV} to a built binary"
    )
