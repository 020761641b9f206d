"""`python -m captioning caption IMAGE...`, the same as the `captioning` console command."""

import sys

from captioning.cli import main

sys.exit(main())
