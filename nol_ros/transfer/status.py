"""What a fetch has done so far, in numbers (no ROS: the transfer service keeps it, the transfer
node publishes it as nol_ros/msg/TransferStatus, whose STATE_* constants these states are)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

MANIFEST, RECEIVING, WAITING, ASSEMBLING, DONE, PAUSED, FAILED, CANCELLED = range(8)


@dataclass
class FetchStatus:
    """What a fetch has done so far (published as nol_ros/msg/TransferStatus)."""

    peer: str
    remote_path: str
    local_path: str
    state: int = 0
    transfer_id: str = ""
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_resumed: int = 0
    chunks_fetched: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    wire_bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    message: str = ""
    error_code: str = ""
    result_path: str = ""
    t0: float = field(default_factory=time.monotonic)
