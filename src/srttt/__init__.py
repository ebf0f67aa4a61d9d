"""SR-TTT liver tumour segmentation benchmark pipeline."""

import logging

__version__ = "0.1.0"

# The library stays quiet unless the caller configures logging (see srttt.cli).
logging.getLogger(__name__).addHandler(logging.NullHandler())
