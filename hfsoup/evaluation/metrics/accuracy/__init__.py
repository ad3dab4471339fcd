# The folder is an `evaluate` module directory (`evaluate.load` takes it by path); this file only makes setuptools
# ship `accuracy.py` with the package.
