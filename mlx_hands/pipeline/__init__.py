"""Pre/post-processing, the detector→WiLoR route and video I/O: numpy and OpenCV only."""
