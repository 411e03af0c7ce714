"""Self-annotation: camera tracking + TSDF reconstruction, object registration, masks."""
