import sys

from mlx_hands.cli import main

sys.exit(main())
