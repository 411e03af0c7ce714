"""Learning nodes only (reconstruction, view_selection, nol, trainer), for a real ROS 2
install:

    ros2 launch nol_ros learn.launch.py namespace:=robot use_sim_time:=false

The same graph as config/bringup/learn.yaml (`nol-ros bringup --config learn` in a pip
install); parameters come from the package's config/*.yaml, the files bring-up passes too.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    config = os.path.join(get_package_share_directory("nol_ros"), "config")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="true when replaying a bag with /clock"),
        Node(package="nol_ros", executable="reconstruction_node", name="reconstruction",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "reconstruction.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="view_selection_node", name="view_selection",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "view_selection.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="nol_node", name="nol",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "nol.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="trainer_node", name="trainer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "trainer.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
    ])
