"""Learning nodes only (reconstruction + nol), for a real ROS 2 install:

    ros2 launch nol_ros learn.launch.py namespace:=robot use_sim_time:=false

Parameters come from the package's config/*.yaml (the same files `nol-ros bringup` reads).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("nol_ros")
    ns = LaunchConfiguration("namespace")
    sim = LaunchConfiguration("use_sim_time")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="true when replaying a bag with /clock"),
        Node(package="nol_ros", executable="reconstruction_node", name="reconstruction",
             namespace=ns, output="screen",
             parameters=[os.path.join(share, "config", "reconstruction.yaml"),
                         {"use_sim_time": sim}]),
        Node(package="nol_ros", executable="nol_node", name="nol", namespace=ns,
             output="screen",
             parameters=[os.path.join(share, "config", "nol.yaml"), {"use_sim_time": sim}]),
    ])
