"""nbgrader for an instructor's server on the Faultline hub (hub/jupyterhub_config.py).

The course is the instructor's checkout of this repository, ~/faultline by default
(FAULTLINE_COURSE_ROOT): its own autograder/nbgrader_config.py sets the folders and the
gradebook; here only the course id and the hub's shared exchange are added.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

COURSE_ROOT = os.environ.get("FAULTLINE_COURSE_ROOT",
                             os.path.join(os.path.expanduser("~"), "faultline"))
COURSE_CONFIG = os.path.join(COURSE_ROOT, "autograder", "nbgrader_config.py")
if os.path.exists(COURSE_CONFIG):
    load_subconfig(COURSE_CONFIG)  # noqa: F821 - provided by traitlets

c.CourseDirectory.course_id = "faultline"
c.Exchange.root = os.environ.get("FAULTLINE_EXCHANGE", "/srv/nbgrader/exchange")
if os.environ.get("FAULTLINE_HUB_ACCOUNTS") == "shared":
    # Every submission is owned by the one shared Unix account, never by the student it
    # names: nbgrader's "cheating attempt?" owner check would flag them all.
    c.ExchangeCollect.check_owner = False
