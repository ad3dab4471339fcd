"""Selection: choose a soup on data it is never reported on, and lay out what every ingredient and soup scored.

Runs between fetching the ingredients and writing the soup: it carves the task's data into a held-out part (where
the methods that need scores choose) and a reported part, turns a loaded model into the scorers the soup methods
call, runs the chosen method and the baselines through the same `run(context)`, and builds the results table.

    options.py   `Selection`: the task, the held-out and reported parts, data, batching, baselines, plot, force
    heldout.py   carving the held-out and reported parts (seeded, never overlapping unless forced)
    scorers.py   a classifier and one part of the data, as the `Scorer` / `HeldOutLoss` the methods call
    stage.py     the stage: score every ingredient, run each method in `SOUPS` that is compared, and the ensemble
    results.py   the results table (`results.json`, `.csv`, `.png`)
"""
