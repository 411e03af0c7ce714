"""nol_ros: Neural Object Learning for ROS 2.

The pure core (everything except ``nol_ros.ros`` and ``nol_ros.nodes``) never imports rclpy.
The generated ROS interfaces (``nol_ros.msg``, ``nol_ros.srv``, ``nol_ros.action``) are built by
CMake into the environment's site-packages; ``extend_path`` lets this source package find them
there, so one import name serves both the code and the interfaces.
"""

import os
from pkgutil import extend_path

# OpenMP threads that spin while waiting made tracking 5x slower on a loaded 2-core machine
# (measured: 123.7 -> 26.9 s for 100 frames); set before torch/Open3D load their runtimes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
