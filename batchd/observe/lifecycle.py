"""What `batchd run` does for its operators at start and stop: metrics files, systemd, endpoints.

`prepare` runs first (before any metric counts and before worker processes start), `started`
once the daemon serves (READY=1, the watchdog), `finish` last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchd.logs import get_logger
from batchd.observe import metrics, server
from batchd.observe.systemd import Notifier
from batchd.settings import Settings

if TYPE_CHECKING:
    from batchd.daemon import Daemon

log = get_logger("batchd.observe")

#: Seconds READY=1 waits for the endpoints to listen (they bind in a thread of their own).
ENDPOINTS_WAIT = 5.0


@dataclass
class Observation:
    notifier: Notifier
    metrics_dir: Path | None

    def started(self, daemon: Daemon) -> None:
        """The daemon serves: tell systemd, and keep its watchdog fed while the loops live."""
        address = server.wait_started(ENDPOINTS_WAIT) if daemon.settings.http.enabled else None
        status = f"serving; roles {','.join(daemon.roles)}"
        if address is not None:
            status += f"; endpoints on {address[0]}:{address[1]}"
        if self.notifier.enabled:
            self.notifier.ready(status)
            self.notifier.start_watchdog(daemon.stop, daemon.liveness.problems)
            log.info("systemd notified", watchdog_interval=self.notifier.watchdog_interval)

    def finish(self) -> None:
        if self.metrics_dir is not None:
            metrics.remove_directory(self.metrics_dir)


def prepare(settings: Settings) -> Observation:
    """Read systemd's variables (hiding them from worker processes) and, when the endpoints are
    on, give this daemon a fresh multiprocess metrics directory its workers inherit."""
    notifier = Notifier.from_environment()
    directory = None
    if settings.http.enabled:
        try:
            directory = metrics.prepare_directory(settings.http.metrics_dir)
        except OSError as exc:  # metrics are worth a log line, not the daemon's life
            log.error(
                "cannot make the metrics directory; /metrics shows this process only",
                parent=str(settings.http.metrics_dir or "(temp dir)"),
                error=str(exc),
            )
        else:
            metrics.enable_multiprocess(directory)
    return Observation(notifier, directory)
