"""MLX networks. Nothing here imports cv2, torch or PIL."""
