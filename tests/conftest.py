"""Settings for the whole suite, applied before any test module imports MLflow or Prefect.

Nothing the tests run may send traffic off this machine: MLflow and Prefect (and the servers
they start) report usage data unless told not to.
"""

import os

os.environ["DO_NOT_TRACK"] = "true"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
