"""WebShop (princeton-nlp/WebShop) as a pure-Python text environment over the original data files.

The original needs a Flask site, pyserini with Java and spaCy models; this adapter reproduces its
text pages, actions, goal list and reward in plain Python and reads the original product and goal
files from a folder the user provides (`data_dir`, default $WEBSHOP_DATA). See
docs/envs/webshop.md for the files, the splits and the differences from the original.
"""

from __future__ import annotations

import os

from trajkit.envs.webshop.env import VERSION, WebShopEnv
from trajkit.envs.webshop.oracle import OracleError, oracle_trajectory

__all__ = ["VERSION", "OracleError", "WebShopEnv", "availability", "oracle_trajectory"]


def availability(data_dir: str | None = None, **_: object) -> str | None:
    """None when a WebShop data folder with the needed files is configured, else what is missing."""
    from trajkit.envs.webshop.data import find_files

    found = find_files(data_dir or os.environ.get("WEBSHOP_DATA"))
    return found if isinstance(found, str) else None
