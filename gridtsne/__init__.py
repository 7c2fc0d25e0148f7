"""gridtsne: embed images, lay them out with t-SNE on a grid, render a zoomable mosaic.

The ``gridtsne`` package is the Beam-free core; ``transforms`` wraps it for Beam and
``pipelines`` holds the entry points.
"""
__version__ = "0.1.0"
