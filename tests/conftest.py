import os

os.environ["MLX_ENABLE_TF32"] = "0"  # exact fp32 matmuls on CUDA; set before mlx is imported

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
