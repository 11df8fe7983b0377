"""One-way converters from the original files (Lightning .ckpt, ultralytics .pt, MANO .pkl) to the
canonical safetensors layout. numpy only: never torch, chumpy or ultralytics."""
