"""``python -m autograder.grade``: see ``autograder.grade.cli``."""

import sys

from autograder.grade.cli import main

sys.exit(main())
