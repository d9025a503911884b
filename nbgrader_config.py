"""Lets nbgrader (the JupyterLab formgrader, `nbgrader` at the repo root) find the course.

The configuration itself lives in autograder/nbgrader_config.py.
"""

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file
load_subconfig("autograder/nbgrader_config.py")  # noqa: F821
