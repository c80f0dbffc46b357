"""``mlops twin``: the provisioned topology on one machine.

One module per concern, shared by both modes: :mod:`.settings` (what a twin is made of, its
recorded state), :mod:`.supervisor` (starting, finding and stopping processes),
:mod:`.standins` (the emulator and PostgreSQL in place of AWS services), :mod:`.lifecycle`
(the process twin: up, status, down) and :mod:`.cli` (the command line).
"""

from scripts.twin.lifecycle import Twin, down, load, status_lines, up
from scripts.twin.settings import SERVICES, TwinConfig, TwinState
from scripts.twin.supervisor import StopPolicy, running, stop_tree, tree

__all__ = [
    "SERVICES",
    "StopPolicy",
    "Twin",
    "TwinConfig",
    "TwinState",
    "down",
    "load",
    "running",
    "status_lines",
    "stop_tree",
    "tree",
    "up",
]
