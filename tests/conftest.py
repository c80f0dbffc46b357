"""Settings for the whole suite, applied before any test module imports MLflow, Prefect, the
Pulumi program or the policy pack.

Nothing the tests run may send traffic off this machine: MLflow and Prefect (and the servers
they start) report usage data unless told not to.

The Pulumi program runs with infra/ as its working directory and the policy pack with policy/
(``main: infra/``, ``pulumi preview --policy-pack policy``): their modules import each other as
siblings (``import config``, ``from resource_types import ...``), and so do the tests, with both
folders on the path from here on, ahead of any installed copy of ``hostboot``.
"""

import os
import sys
from pathlib import Path

os.environ["DO_NOT_TRACK"] = "true"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

ROOT = Path(__file__).resolve().parent.parent
for folder in ("policy", "infra"):  # infra/ ends up first, as under `pulumi up`
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))
