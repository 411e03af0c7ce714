"""nol_ros: Neural Object Learning for ROS 2.

The pure core (everything except ``nol_ros.ros`` and ``nol_ros.nodes``) never imports rclpy.
The generated ROS interfaces (``nol_ros.msg``, ``nol_ros.srv``, ``nol_ros.action``) are built by
CMake into the environment's site-packages; ``extend_path`` lets this source package find them
there, so one import name serves both the code and the interfaces.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
