"""Process environment the nodes rely on, set before rclpy, torch or Open3D start (the user's
environment wins). No ROS import here: the test set-up calls it before anything loads."""

from __future__ import annotations

import os
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).with_name("fastdds_profile.xml")


def default_ros_env() -> None:
    """Set what is not set already:

    - DDS discovery stays on this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``);
    - ``OMP_WAIT_POLICY=PASSIVE``: Open3D's OpenMP threads otherwise spin while they wait, and
      on the shared 2-core machine (another process busy) RGB-D tracking took 595 ms per frame
      instead of 44 ms (measured, demo sequence); it must be set before Open3D is imported;
    - ``FASTDDS_DEFAULT_PROFILES_FILE`` = :data:`FASTDDS_PROFILE` (unless a Fast DDS profile file
      is set already): a service waits up to 5 s, not Fast DDS's 100 ms, for a new client's
      reply reader to be discovered before it gives the reply up (test_dds_profile measures the
      wait). Under CI load a client once waited 120 s for a reply, as a dropped reply leaves
      it; the file says more.
    """
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not (os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
            or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
