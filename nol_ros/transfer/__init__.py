"""Moving folders between hosts (robot <-> workstation) without a shared file system: pure
Python, no ROS (nol_ros/ros/transfer.py carries the bytes over ROS 2 services).

- :mod:`~nol_ros.transfer.paths`: every path from the wire is a plain relative path confined
  to the host's transfer root;
- :mod:`~nol_ros.transfer.manifest`: a folder as a chunked byte stream with SHA-256 per file
  and per chunk, the manifest's hash naming the transfer (same content, same id: resumable);
- :mod:`~nol_ros.transfer.codec`: zlib per chunk when it pays, bounded decompression;
- :mod:`~nol_ros.transfer.endpoints`: :class:`Outbox` (serves manifests and checked chunks),
  :class:`Inbox` / :class:`Receipt` (stages chunks in any order, resumes from what it holds,
  assembles the folder atomically into place), :class:`TransferConfig`.

    out = Outbox("robot_root"); m = out.manifest("view_selection/job1/packages/mug")
    rec = Inbox("ws_root").open(Manifest.from_bytes(m.to_bytes()), "mug")
    for i in rec.missing(): rec.put(i, *out.read_chunk(m.id, i))
    rec.assemble()                                  # ws_root/mug == robot's folder
"""

from nol_ros.transfer.endpoints import (  # noqa: F401
    Inbox,
    Outbox,
    Receipt,
    SourceChangedError,
    TransferConfig,
    UnknownTransferError,
)
from nol_ros.transfer.manifest import Limits, Manifest, build_manifest  # noqa: F401
from nol_ros.transfer.paths import PathError, confined, wire_path  # noqa: F401
