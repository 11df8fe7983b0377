"""Overlays drawn with numpy and OpenCV (no OpenGL)."""
