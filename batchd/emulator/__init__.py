"""An offline emulator of the Anthropic Message Batches API, with its limits and faults.

`batchd emulator` runs it as a command; `serve` and `start_in_thread` run it from Python.
"""

from batchd.emulator.config import DEFAULT_API_KEY, EmulatorConfig, workspace_id_for
from batchd.emulator.faults import FaultProfile, load_profile
from batchd.emulator.server import EmulatorHandle, serve, start_in_thread

__all__ = [
    "DEFAULT_API_KEY",
    "EmulatorConfig",
    "EmulatorHandle",
    "FaultProfile",
    "load_profile",
    "serve",
    "start_in_thread",
    "workspace_id_for",
]
