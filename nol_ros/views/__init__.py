"""Choosing source views: per sequence (SMOT-like), by pose distance (LineMOD-like), per target."""
