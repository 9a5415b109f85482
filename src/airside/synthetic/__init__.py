"""Generated test scenes with their ground truth, kept apart from the run-time code.

``clips``: face sprites moving over a textured background, encoded as video (the tracking,
identity and pipeline tests, ``make bench``). ``figures``: people-shaped stick figures and
props drawn on that background (falls, sitting down, abandoned objects). Nothing at run
time imports this package; the tests and the benchmarks do.
"""
