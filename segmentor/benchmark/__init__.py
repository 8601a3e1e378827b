"""Speed and compute of the segmentor: the side-by-side benchmark, FLOP counting, SD 1.5's architecture."""
