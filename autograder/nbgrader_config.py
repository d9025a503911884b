"""nbgrader configuration for the Faultline course kit.

solutions/ is nbgrader's source folder and exercises/ its release folder; the
gradebook and the student folders (submitted, autograded, feedback) live under
autograder/ and are gitignored. nbgrader finds this file when run from autograder/
(`cd autograder && nbgrader autograde 01-availability`); autograder.generate loads it
explicitly. traitlets runs this file with ``__file__`` and ``get_config`` defined.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

HERE = os.path.dirname(os.path.abspath(__file__))  # autograder/
ROOT = os.path.dirname(HERE)  # the repository

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "faultline"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "autograder/submitted"
c.CourseDirectory.autograded_directory = "autograder/autograded"
c.CourseDirectory.feedback_directory = "autograder/feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")

# The Assignment List (Lab extension) needs an existing exchange folder.
EXCHANGE = os.path.join(HERE, "exchange")
os.makedirs(EXCHANGE, exist_ok=True)
c.Exchange.root = EXCHANGE

# A cell gets 60 s (module 01 runs in milliseconds). An async hang makes nbclient
# time out waiting for IOPub output; without the next line nbgrader would drop the
# whole submission instead of scoring that cell 0 (measured with nbgrader 0.9.6).
c.Execute.timeout = 60
c.Execute.raise_on_iopub_timeout = False

# A submission whose test cell was deleted (or stripped of its nbgrader metadata) would
# otherwise get no grade for it and no error; put the cell back from the gradebook.
# (Edited locked cells are restored from the gradebook by default.)
c.OverwriteCells.add_missing_cells = True
