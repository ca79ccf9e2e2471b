"""Use a trained generator: rebuild it from a checkpoint (:mod:`~sr_cli.evaluate.inference`),
compare generators on image sets (:mod:`~sr_cli.evaluate.compare`, ``sr-eval``'s
:mod:`~sr_cli.evaluate.evaluation`), upscale image files (:mod:`~sr_cli.evaluate.upscaling`,
:mod:`~sr_cli.evaluate.tiling`) and export it (:mod:`~sr_cli.evaluate.export`).

The lowest feature wing: it imports the leaves and the ground modules only (nothing of
:mod:`sr_cli.train`).
"""
