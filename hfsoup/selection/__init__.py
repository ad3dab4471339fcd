"""Selection: choose a soup on data it is never reported on, and lay out what every ingredient and soup scored.

Runs between fetching the ingredients and writing the soup: it carves the task's data into a held-out part (where
greedy and learned soups are chosen) and a reported part, turns a loaded model into the scorers the soup methods
call, runs the method and the baselines, and builds the results table.

Modules: see the modules below (each opens with what it does).
"""
