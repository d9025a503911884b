"""nbgrader for a student's server on the Faultline hub (hub/jupyterhub_config.py).

Students fetch from and submit to the hub's shared exchange; the Assignment List in
JupyterLab does both.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.CourseDirectory.course_id = "faultline"
c.Exchange.root = os.environ.get("FAULTLINE_EXCHANGE", "/srv/nbgrader/exchange")
if os.environ.get("FAULTLINE_STUDENT_ID"):
    # Shared-account mode: the hub user's name, since the Unix account is everybody's.
    c.CourseDirectory.student_id = os.environ["FAULTLINE_STUDENT_ID"]
