"""Registered model components. ``losses`` needs only torch and mmengine;
``dense_heads`` needs mmdet and is imported by the package when mmdet is."""
