"""The metrics server follows the running generation: started with the service, and moved, started or
stopped by a `restart` whose settings change HEYGEM_METRICS_PORT or HEYGEM_METRICS_ADDRESS."""

from __future__ import annotations

from launcher import exitcodes
from launcher.config.settings import Settings
from launcher.errors import LaunchError
from launcher.service.state import ServiceState
from launcher.system import gpu
from launcher.watch import metrics


def _refused(settings: Settings, exc: OSError) -> LaunchError:
    where = f"HEYGEM_METRICS_PORT={settings.metrics_port}"
    if settings.metrics_address != "0.0.0.0":
        where += f" (HEYGEM_METRICS_ADDRESS={settings.metrics_address})"
    return LaunchError(f"{where}: cannot serve metrics there: {exc.strerror}", exit_code=exitcodes.CONFIG)


class MetricsServing(ServiceState):
    def serve_metrics(self, settings: Settings) -> metrics.NoMetrics:
        """The metrics of a start; LaunchError (78) when its port cannot be bound."""
        try:
            return metrics.make(settings.metrics_port, gpu.inventory, settings.metrics_address)
        except OSError as exc:
            raise _refused(settings, exc) from None

    def move_metrics(self, settings: Settings, *, refuse: bool = True) -> None:
        """Serve where `settings` say (the counts carry over). A place that cannot be bound: LaunchError (78)
        with the old place serving again when `refuse`, else one line and no metrics (a rollback)."""
        place = None if settings.metrics_port is None else (settings.metrics_address, settings.metrics_port)
        old = self.metrics.place
        if place == old:
            return
        self.metrics.close()
        if place is None:
            self.metrics = metrics.NoMetrics()
            self.log("metrics are no longer served (HEYGEM_METRICS_PORT is empty)")
            return
        target = self.metrics if isinstance(self.metrics, metrics.Metrics) else metrics.Metrics(gpu.inventory)
        try:
            target.serve(place[1], place[0])
        except OSError as exc:
            if old is not None:
                try:
                    self.metrics.serve(old[1], old[0])  # type: ignore[attr-defined]
                except OSError:
                    self.metrics = metrics.NoMetrics()
            error = _refused(settings, exc)
            if refuse:
                raise error from None
            self.log(f"{error}; no metrics until the next restart")
            return
        self.metrics = target
        self.log(f"metrics served on {place[0]}:{place[1]}")
