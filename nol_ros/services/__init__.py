"""What the nodes offer, as plain Python (no rclpy): each node maps its ROS parameters onto one
of these services' config dataclasses, its requests onto the service's calls and the results
back onto replies and topics. Every service is unit-tested without ROS.

- :mod:`~nol_ros.services.learning`: learn objects as jobs, render them in given poses (nol
  node);
- :mod:`~nol_ros.services.training`: train the recognisers as jobs (trainer node);
- :mod:`~nol_ros.services.recognition`: the recogniser on a live stream, its models watched
  (recognizer node);
- :mod:`~nol_ros.services.selection`: register objects in a sequence and select their views
  (view_selection node).

The reconstruction node's service is :class:`nol_ros.streaming.live.LiveTracker` with the
ingest of :mod:`nol_ros.streaming.ingest`.
"""
