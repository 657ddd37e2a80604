"""Report: the decision rules (``decide``) that turn measured quality and projected cost into a
recommendation with reasons."""
