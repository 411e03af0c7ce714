"""Calling another node's service from a worker thread (a job), with clear errors.

A job runs on the job manager's thread, not on the executor: it can block on a future while the
node's executor (spinning in another thread, as ``run_nodes`` does) delivers the reply.
"""

from __future__ import annotations

import threading

from nol_ros.errors import NolError
from nol_ros.srv import ExportSequence


class RemoteServiceError(NolError):
    """A service of another node is missing, timed out, or answered with an error code."""

    code = "SERVICE_ERROR"

    def __init__(self, message: str, code: str = "SERVICE_ERROR"):
        super().__init__(message)
        self.code = code


class ServiceCaller:
    """``call(request, timeout_s)`` -> response, from any thread but the executor's own."""

    def __init__(self, node, srv_type, name: str, callback_group=None):
        self.node, self.name = node, name
        self.client = node.create_client(srv_type, name, callback_group=callback_group)

    @property
    def resolved_name(self) -> str:
        try:  # the fully qualified name (namespace applied), for messages
            return self.node.resolve_service_name(self.name)
        except Exception:
            return self.client.srv_name

    def call(self, request, timeout_s: float = 60.0, wait_for_service_s: float = 5.0):
        if not self.client.wait_for_service(timeout_sec=wait_for_service_s):
            raise RemoteServiceError(
                f"service {self.resolved_name} is not available (waited {wait_for_service_s:.0f}"
                " s); is the node running in this namespace and ROS domain?",
                "SERVICE_UNAVAILABLE")
        done = threading.Event()
        fut = self.client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            fut.cancel()
            raise RemoteServiceError(f"service {self.resolved_name} did not answer within "
                                     f"{timeout_s:.0f} s", "SERVICE_TIMEOUT")
        if fut.exception() is not None:
            raise RemoteServiceError(f"service {self.resolved_name} failed: {fut.exception()}")
        return fut.result()


def export_live_buffer(caller: ServiceCaller, output_dir: str, timeout_s: float = 120.0) -> str:
    """Ask the reconstruction node (``caller`` for its ~/export_sequence) to export its buffer
    into ``output_dir``; returns the scene folder. Raises RemoteServiceError with the node's
    error code (e.g. NO_FRAMES) when it could not."""
    r = caller.call(ExportSequence.Request(output_dir=str(output_dir)), timeout_s)
    if not r.success:
        raise RemoteServiceError(f"exporting the live buffer failed: {r.message}",
                                 r.error_code or "EXPORT_FAILED")
    return r.path
